"""Structured logs: one JSON object per line on stderr, configured only by entry points.

Entry points call `configure_logging()` (Celery workers) or hand `logging_dict()` to the server.
Code that handles one request or one task binds its ids with `bind()`, and every line logged
meanwhile carries them, whichever module logs it.
"""

from __future__ import annotations

import functools
import json
import logging
import logging.config
import time
from contextvars import ContextVar, Token
from typing import Any

import orjson

# What the current request or task is, copied into every record logged while it runs.
_context: ContextVar[dict[str, Any] | None] = ContextVar("ingest_log_context", default=None)

# Attributes every LogRecord has, and Celery's `data` extra (it holds the task's arguments, so
# the payloads; its traceback comes with the record anyway). Anything else came from `extra=`.
_LEFT_OUT = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "data"}
)


def bind(**fields: Any) -> Token[dict[str, Any] | None]:
    """Add `fields` to every line logged in this context until `unbind(token)`."""
    return _context.set({**(_context.get() or {}), **fields})


def unbind(token: Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, bound ids, then extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _context.get()
        if context:
            line.update(context)
        for key, value in record.__dict__.items():
            if key not in _LEFT_OUT and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # an integer past 64 bits
            return json.dumps(line, default=str, ensure_ascii=False)


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _utc_iso(created: float) -> str:
    seconds = int(created)
    return f"{_utc_second(seconds)}.{int((created - seconds) * 1000):03d}Z"


def logging_dict(level: str = "INFO", quiet: tuple[str, ...] = ()) -> dict[str, Any]:
    """A `logging.config.dictConfig` document: JSON lines on stderr for every logger, the
    `quiet` loggers only from WARNING up."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # granian's loggers keep no handlers of their own: their lines go out as JSON too.
            **{
                name: {"level": level, "handlers": [], "propagate": True}
                for name in ("_granian", "granian.access")
            },
            **{name: {"level": "WARNING"} for name in quiet},
        },
    }


def configure_logging(level: str | int = "INFO", quiet: tuple[str, ...] = ()) -> None:
    if isinstance(level, int):
        level = logging.getLevelName(level)
    logging.config.dictConfig(logging_dict(level, quiet))
