"""Connections with the right transaction shape for reads and writes."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from sqlalchemy import Connection, Engine

from ..errors import FhirError
from .db import make_engine
from .faults import classify, is_connection_error, is_retryable

log = logging.getLogger("fhir_server.storage")
T = TypeVar("T")


def transaction_memo(conn: Connection, key: str) -> dict:
    """A dict kept in `conn.info` under `key` for as long as the connection's root transaction
    lasts (a new transaction starts it empty); outside a transaction, a fresh one each call.
    For answers a transaction asks for again and again (its txid, the subscriptions watching
    a type) that cannot change under it, or that it drops itself when it changes them."""
    tx = conn.get_transaction()
    if tx is None:
        return {}
    held = conn.info.get(key)
    if held is None or held[0] is not tx:
        held = conn.info[key] = (tx, {})
    return held[1]


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
        from .planner_statistics import transaction_ended
        from .repository import discard_buffer, flush, start_buffering

        with self.engine.connect() as conn:
            conn.info["write"] = True
            start_buffering(conn)
            committed = False
            try:
                with conn.begin():
                    yield conn
                    flush(conn)  # buffered version and index rows, before COMMIT
                committed = True
            except FhirError:
                raise
            except Exception as exc:
                # two writers created the same resource at once, a lost connection...: the
                # transaction rolled back, so nothing was written. Deadlocks and serialization
                # failures rise as they are, so that run_with_retry can run the work again; the
                # HTTP edge classifies whatever escapes.
                answer = classify(exc)
                if is_connection_error(exc):
                    self._discard_pooled()  # its neighbours in the pool are likely as dead
                if answer is None or is_retryable(exc):
                    raise
                log.warning("write failed and rolled back (%s): %s", answer.status, _first_line(exc))
                if answer.status == 409:
                    raise WriteConflict(409, answer.issues) from None
                raise answer from None
            finally:
                discard_buffer(conn)
                transaction_ended(conn, committed)  # bulk inserts may make planner statistics due
                conn.info["write"] = False

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._autocommit.connect() as conn:
            yield conn

    def run_read(self, fn: Callable[..., T], *args) -> T:
        """`fn(conn, *args)` on a read connection; tried once more on a fresh
        connection when the first one turns out dead (a database restart, an
        idle timeout): reads have no side effects, so the retry is safe. A
        database failure becomes a FhirError (503/409, see `faults`)."""
        for attempt in (1, 2):
            try:
                with self.read() as conn:
                    return fn(conn, *args)
            except FhirError:
                raise
            except Exception as exc:
                if is_connection_error(exc):
                    self._discard_pooled()  # a restart kills every pooled connection, not just this one
                if attempt == 1 and is_connection_error(exc):
                    log.info("read failed on a dead connection, retrying once: %s", _first_line(exc))
                    continue
                answer = classify(exc)
                if answer is None:
                    raise
                raise answer from None
        raise AssertionError("unreachable")

    def _discard_pooled(self) -> None:
        """Close the idle pooled connections of both engines (after a connection
        error: the database restarted or went away); new ones are opened on demand."""
        for engine in (self.engine, self._autocommit):
            try:
                engine.pool.dispose()
            except Exception:  # noqa: BLE001 - closing dead sockets may fail; they are dropped anyway
                pass

    def dispose(self) -> None:
        self.engine.dispose()
        if hasattr(self._autocommit, "dispose"):
            self._autocommit.dispose()


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
