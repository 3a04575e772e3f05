"""Engine creation for SQLite and PostgreSQL, with the pragmas each needs."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.pool import QueuePool

DEFAULT_SQLITE_PATH = Path("data") / "fhir.sqlite"
# Threads that run blocking request work per process (the API layer sets it).
THREADPOOL_SIZE = int(os.environ.get("FHIR_SERVER_THREADS", "16"))
# SQLite reads the database file through a memory map of up to this many bytes: pages
# are then shared with the OS cache instead of copied into each connection's 2 MiB page
# cache by a read() call per page (a search touching ~100 index and resource pages took
# 0.40 ms instead of 0.16 ms at 5,000 Patients). Pages still in the WAL are read as before.
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
SQLITE_READER_CACHE_KIB = 32 * 1024  # page cache of the event loop's read connection (one per process)


def default_database_url() -> str:
    return os.environ.get("FHIR_SERVER_DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def _pg_options(url: str) -> str:
    """Server options for our connections, keeping any `options` the URL gives."""
    given = make_url(url).query.get("options", "")
    if isinstance(given, tuple):
        given = " ".join(given)
    return " ".join(x for x in (given, "-c plan_cache_mode=force_custom_plan -c jit=off") if x)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | None = None, autocommit: bool = False) -> Engine:
    """Create an engine; SQLite gets WAL and foreign keys, both a pool as large
    as the request thread pool (so a busy server never opens and closes
    overflow connections per request). `autocommit=True` makes an engine for
    reads: its connections stay in autocommit, with no per-checkout switching
    and no BEGIN/ROLLBACK round trips."""
    url = url or default_database_url()
    extra = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=QueuePool,
            pool_size=THREADPOOL_SIZE,
            max_overflow=4,
            **extra,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            # Python's sqlite3 opens transactions lazily; we issue BEGIN ourselves
            # (IMMEDIATE for writes) so that writers serialise up front.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            if autocommit or conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                return
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    # No pre-ping: it costs a round trip per checkout; a dead connection surfaces
    # as an error and is replaced (pool_recycle bounds their age).
    # plan_cache_mode=force_custom_plan: psycopg prepares a statement after five
    # runs, and PostgreSQL could then switch to a generic plan that ignores the
    # search values (e.g. scanning every Observation with a code instead of one
    # patient's few); this keeps the parse savings but plans with the values.
    # jit=off: JIT compiling costs more than it saves on these short queries.
    engine = create_engine(
        url,
        pool_size=THREADPOOL_SIZE,
        max_overflow=4,
        pool_recycle=1800,
        connect_args={"options": _pg_options(url), "connect_timeout": 10},
        **extra,
    )
    _ping_after_idle(engine)
    return engine


# A pooled connection unused for this long is checked before use.
IDLE_PING_SECONDS = 2.0


def _ping_after_idle(engine: Engine) -> None:
    """Check a pooled connection that sat idle before handing it out.

    A connection in steady use is handed out as is (no round trip on the hot
    path). One that sat idle may have been closed by a database restart or an
    idle timeout meanwhile; it gets one `SELECT 1`, and a dead one is replaced
    (SQLAlchemy's pool retries the checkout on DisconnectionError), so the
    first request after a quiet restart does not fail."""
    import time

    from sqlalchemy import exc as sa_exc

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):  # pragma: no cover - trivial
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            if not dbapi_conn.autocommit:
                dbapi_conn.rollback()  # end the implicit transaction the ping opened
        except Exception as exc:
            raise sa_exc.DisconnectionError(f"idle connection is gone: {exc}") from exc
