"""Database failures, in FHIR terms.

Every layer lets driver exceptions rise; the HTTP edge (and `Database.write`)
asks `classify` what a failure means for the client, so that no database text
ever reaches a client and no database fault becomes a bare 500:

| failure                                                  | answer                                      |
|----------------------------------------------------------|---------------------------------------------|
| unique/foreign-key violation (two writers at once)       | 409 `conflict`, nothing written              |
| serialization failure (40001), deadlock (40P01)          | 409 `conflict`, nothing written, retry       |
| connection refused/lost, server shutting down or starting, too many connections, SQLite busy | 503 `transient` + `Retry-After` |
| a value the database cannot hold (`DataError`)           | 400 `value`                                 |
| a statement cancelled (57014: statement_timeout, an operator's cancel) | 503 `timeout`, not retried  |

`is_connection_error` says whether a failure is one where a read may simply be
tried again on a fresh connection (reads and searches are idempotent).
"""

from __future__ import annotations

import sqlite3

from ..errors import FhirError, Issue

RETRY_AFTER_SECONDS = 5

# SQLSTATE classes/codes (PostgreSQL appendix A)
_CONFLICT_STATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_UNAVAILABLE_PREFIXES = ("08", "57P", "53300")  # connection exception, operator intervention, too_many_connections
_QUERY_CANCELED = "57014"  # statement_timeout, or pg_cancel_backend


def _driver_error(exc: BaseException) -> BaseException:
    """The DBAPI exception under SQLAlchemy's wrapper (or the exception itself)."""
    return getattr(exc, "orig", None) or exc


def _sqlstate(err: BaseException) -> str:
    return str(getattr(err, "sqlstate", None) or getattr(err, "pgcode", None) or "")


def is_connection_error(exc: BaseException) -> bool:
    """A lost or refused database connection (safe to retry an idempotent read)."""
    from sqlalchemy.exc import DisconnectionError

    if getattr(exc, "connection_invalidated", False) or isinstance(exc, DisconnectionError):
        return True
    err = _driver_error(exc)
    state = _sqlstate(err)
    if state == _QUERY_CANCELED:
        return False  # the statement was stopped, the connection is fine: running it again costs as much
    if state.startswith(_UNAVAILABLE_PREFIXES):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        asyncpg = None
    if asyncpg is not None and isinstance(
        err, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError,
              asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.TooManyConnectionsError)
    ):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        psycopg = None
    if psycopg is not None and isinstance(err, psycopg.OperationalError) and not state:
        return True  # psycopg raises these without SQLSTATE for failed connects and dropped sockets
    if psycopg is not None and isinstance(err, psycopg.InterfaceError):
        return True
    return isinstance(err, ConnectionError)


def _is_sqlite_busy(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and ("locked" in str(err) or "busy" in str(err))


def unavailable(what: str = "The database") -> FhirError:
    """503 `transient` with Retry-After: try again shortly."""
    return FhirError(
        503,
        [Issue("error", "transient", f"{what} is unavailable at the moment; nothing was changed. Retry in a few seconds")],
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def query_cancelled() -> FhirError:
    """503 `timeout`: the database stopped the statement (its statement_timeout, or an operator)."""
    return FhirError.of(503, "timeout", "The database stopped this request's query: it ran longer than allowed. "
                        "Narrow the search (fewer or more selective parameters) and try again")


def classify(exc: BaseException) -> FhirError | None:
    """The client-facing answer for a database failure, or None if `exc` is not one."""
    if isinstance(exc, FhirError):
        return exc
    err = _driver_error(exc)
    state = _sqlstate(err)
    if state == _QUERY_CANCELED:
        return query_cancelled()
    if state in _CONFLICT_STATES:
        return FhirError.of(409, "conflict", "The request conflicted with a concurrent change; nothing was written. Retry the request")
    if state.startswith("23") or _is_integrity(exc):
        return FhirError.of(409, "conflict", "Concurrent write conflict: another request changed the same resource at the same time; nothing was written. Retry the request")
    if is_connection_error(exc) or _is_sqlite_busy(err):
        return unavailable()
    if state.startswith("22") or _is_data_error(exc):
        return FhirError.of(400, "value", "A value in the request cannot be stored (out of range, or holding characters a FHIR string may not hold)")
    return None


def _is_integrity(exc: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError

    err = _driver_error(exc)
    if isinstance(exc, IntegrityError) or isinstance(err, sqlite3.IntegrityError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(err, psycopg.IntegrityError)


def _is_data_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import DataError

    err = _driver_error(exc)
    if isinstance(exc, DataError) or isinstance(err, sqlite3.DataError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(err, psycopg.DataError)


def database_exception_types() -> tuple[type[BaseException], ...]:
    """The exception classes `classify` knows (for registering HTTP error handlers)."""
    import asyncpg
    import psycopg
    from sqlalchemy.exc import DBAPIError, DisconnectionError

    return (DBAPIError, DisconnectionError, psycopg.Error, sqlite3.Error, asyncpg.PostgresError,
            asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, ConnectionError)


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure (PostgreSQL 40P01/40001/55P03) or a busy SQLite
    file: the whole transaction may simply be run again (rest/retry.py does)."""
    err = _driver_error(exc)
    return _sqlstate(err) in ("40001", "40P01", "55P03") or _is_sqlite_busy(err)
