"""Which database errors are worth retrying, and which refuse one row for good: decided by
error code, not by exception class.

psycopg2 raises a read-only standby's refusal as InternalError and mysqlclient raises MariaDB's
refusal of a document (json_valid) as OperationalError: the class alone says too little.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

# SQLSTATE classes and codes that pass: a server going away, restarting or read-only for a
# while (failover, default_transaction_read_only), locks, serialization, cancelled statements.
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58")
TRANSIENT_SQLSTATES = frozenset({"25006", "40001", "40P01", "55P03", "55006", "57014"})

# MySQL/MariaDB client and server errors that pass: no connection, connection lost, server
# gone away or shutting down, too many connections, lock wait timeout, deadlock, read-only.
TRANSIENT_MYSQL_ERRORS = frozenset(
    {1040, 1053, 1205, 1213, 1290, 1836, 2002, 2003, 2005, 2006, 2013, 2026, 2055}
)

# MySQL/MariaDB errors that refuse a row's content: the same row fails every time, the others
# of its statement would pass. MariaDB: a JSON column's json_valid check (4025), a nested-depth
# limit (4040); MySQL 8: invalid JSON text (3140), a value, key or depth its binary JSON cannot
# hold (3150, 3151, 3157), a CHECK constraint (3819); both: a row larger than max_allowed_packet
# (1153), data too long, out of range, a wrong string or time value, a NULL where none goes.
ROW_REFUSALS = frozenset(
    {1048, 1153, 1264, 1292, 1300, 1366, 1406, 3140, 3150, 3151, 3157, 3819, 4025, 4040}
)


def mysql_error(exc: DBAPIError) -> tuple[int | None, str]:
    """MySQL's error code (None without one) and message."""
    args = getattr(exc.orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], str(args[1])
    return None, str(exc.orig or exc)


def is_refusal(exc: DBAPIError) -> bool:
    """Whether MySQL refused a row of the statement for good, for what the row holds."""
    return not exc.connection_invalidated and mysql_error(exc)[0] in ROW_REFUSALS


def is_transient(exc: DBAPIError) -> bool:
    """Whether the statement may succeed if run again later, unchanged."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in TRANSIENT_MYSQL_ERRORS
    # No code at all (the driver could not even reach the server): a connection problem.
    return orig is None or type(orig).__name__ in ("OperationalError", "InterfaceError")
