"""`.env.example` and the table of docs/configuration.md, rendered from the Settings declarations.

scripts/write_config_docs.py writes them; tests/unit/test_config_docs.py holds the committed files
to what this module renders, so a setting cannot be added without its documentation.
"""

from __future__ import annotations

import re
import textwrap

from ingest.config import declared_settings

WIDTH = 99
# The page that holds the table, from the repository's root; links in the settings' docs are
# relative to it.
CONFIGURATION_PAGE = "docs/configuration.md"
ENV_EXAMPLE_HEADER = """\
# Every variable ingest reads. Copy to .env (scripts/bootstrap does, filling in fresh secrets).
# The URLs below point at servers on this machine; docker-compose.yml overrides the hosts.
# An empty value means the default. Generated from ingest/config.py by
# scripts/write_config_docs.py: change a setting there, not here.
"""
COMPOSE_HEADER = """\
# Only for docker-compose.yml: passwords of the containers' own servers and accounts
# (compose puts them into URLs as they are: use letters, digits, - and _).
"""
# What only docker-compose.yml reads: (comment, ((variable, its value in .env.example), ...)).
COMPOSE_VARIABLES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Administrators: only the server containers and the one-shot `roles` step see these.",
        (
            ("POSTGRES_PASSWORD", ""),
            ("MYSQL_ROOT_PASSWORD", ""),
            ("RABBITMQ_DEFAULT_USER", "admin"),
            ("RABBITMQ_DEFAULT_PASS", ""),
        ),
    ),
    (
        "The databases' owners, `ingest_owner`: `migrate` runs as them",
        (("POSTGRES_OWNER_PASSWORD", ""), ("MYSQL_OWNER_PASSWORD", "")),
    ),
    (
        "The application's accounts, `ingest`: rows of its database and its own vhost only",
        (
            ("POSTGRES_INGEST_PASSWORD", ""),
            ("MYSQL_INGEST_PASSWORD", ""),
            ("RABBITMQ_INGEST_PASSWORD", ""),
        ),
    ),
)
TABLE_BEGIN = "<!-- generated from ingest/config.py by scripts/write_config_docs.py -->"
TABLE_END = "<!-- end of the generated table -->"
TABLE = re.compile(re.escape(TABLE_BEGIN) + r"\n.*?" + re.escape(TABLE_END), re.DOTALL)


def env_text(value: object) -> str:
    """A value as its variable spells it; empty for unset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_env_example() -> str:
    lines = ENV_EXAMPLE_HEADER.splitlines()
    for field, declared in declared_settings():
        value = env_text(field.default) if declared.example is None else declared.example
        lines += ["", *_comment(declared.doc), f"{declared.variable}={value}"]
    lines += ["", *COMPOSE_HEADER.splitlines()]
    for text, variables in COMPOSE_VARIABLES:
        lines += _comment(text)
        lines += [f"{name}={value}" for name, value in variables]
    return "\n".join(lines) + "\n"


def render_table() -> str:
    """The configuration table between its markers."""
    lines = [TABLE_BEGIN, "| variable | default | meaning |", "|---|---|---|"]
    for field, declared in declared_settings():
        default = env_text(field.default)
        lines.append(
            f"| `{declared.variable}` | {f'`{default}`' if default else 'unset'} | {declared.doc} |"
        )
    return "\n".join([*lines, TABLE_END])


def page_with_table(page: str) -> str:
    """`page` with its configuration table replaced by the one the code renders."""
    if len(TABLE.findall(page)) != 1:
        raise ValueError(
            f"{CONFIGURATION_PAGE} needs one table between {TABLE_BEGIN} and {TABLE_END}"
        )
    return TABLE.sub(lambda _: render_table(), page)


def _comment(markdown: str) -> list[str]:
    """Markdown as comment lines: a link to another page of docs/ by its text and the page."""
    text = re.sub(r"\[([^]]*)\]\(([^)#]+)[^)]*\)", r"\1 in docs/\2", markdown)
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )
