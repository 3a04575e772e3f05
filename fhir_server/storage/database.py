"""Connections with the right transaction shape for reads and writes."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from ..errors import FhirError

from .db import make_engine


class WriteConflict(FhirError):
    """409: a concurrent writer won a unique-key race; retrying the whole write may succeed."""


class Database:
    """Owns the engine. Writes run in one transaction (SQLite: BEGIN IMMEDIATE,
    so writers queue instead of failing to upgrade a lock); reads run in
    autocommit, saving the BEGIN/ROLLBACK round trips on the hot path."""

    def __init__(self, url: str | None = None, engine: Engine | None = None):
        self.engine = engine or make_engine(url)
        self._writer_lock = threading.RLock() if self.engine.dialect.name == "sqlite" else None
        # reads get an engine of their own whose connections stay in autocommit
        self._autocommit = make_engine(url, autocommit=True) if engine is None else engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Connection]:
        if self._writer_lock is None:
            yield from self._write()
            return
        # SQLite allows one writer at a time; queueing writers on a lock here is
        # fair and immediate, where SQLite's own busy handler sleeps and retries
        # (seconds of tail latency under concurrent writes).
        with self._writer_lock:
            yield from self._write()

    def _write(self) -> Iterator[Connection]:
        from .repository import discard_buffer, flush, start_buffering

        with self.engine.connect() as conn:
            conn.info["write"] = True
            start_buffering(conn)
            try:
                with conn.begin():
                    yield conn
                    flush(conn)  # buffered version and index rows, before COMMIT
            except IntegrityError as exc:
                # two writers created the same resource at once: the loser changes nothing
                raise WriteConflict.of(409, "conflict", f"Concurrent write conflict, nothing was written; retry the request ({_first_line(exc)})") from None
            except Exception as exc:
                if _is_pg_integrity_error(exc):
                    raise WriteConflict.of(409, "conflict", f"Concurrent write conflict, nothing was written; retry the request ({_first_line(exc)})") from None
                raise
            finally:
                discard_buffer(conn)
                conn.info["write"] = False

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._autocommit.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        if hasattr(self._autocommit, "dispose"):
            self._autocommit.dispose()


def _is_pg_integrity_error(exc: Exception) -> bool:
    """psycopg's own IntegrityError (raised by the raw-cursor/COPY flush, which
    bypasses SQLAlchemy's wrapping)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.errors.IntegrityError)


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
