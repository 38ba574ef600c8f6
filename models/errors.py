"""Which database errors are worth retrying: decided by error code, not by exception class.

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
