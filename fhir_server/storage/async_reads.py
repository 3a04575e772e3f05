"""Reads by id awaited on the event loop, without SQLAlchemy or a thread.

Reading one resource by id is the hottest request a FHIR server serves. Run
through SQLAlchemy on the thread pool it costs two thread hand-offs and the
GIL contention of many threads. Here it is one lookup on a driver connection:
asyncpg on PostgreSQL (measured at less than half the CPU of psycopg's async
path and its pool), and on SQLite a plain sqlite3 connection used only from
the event loop (a primary-key lookup takes microseconds; in WAL mode readers
never wait for the writer). Everything else uses the SQLAlchemy engine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from functools import lru_cache

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from .db import SQLITE_MMAP_BYTES, SQLITE_READER_CACHE_KIB
from .faults import is_connection_error, query_cancelled, unavailable
from .repository import StoredResource, stored_from_row

APPLICATION_NAME = "fhir_server.reads"  # how these connections show in pg_stat_activity
_COLUMNS = "pk, res_type, res_id, version_id, last_updated, deleted, content"


@lru_cache(maxsize=256)
def _with_patients_sql(params: tuple[str, ...], sqlite: bool) -> str:
    """The read-by-id statement with, as a last column, the JSON list of the Patient ids its
    compartment parameters `params` reference in the reference index (the rule of
    `query.compartment_condition`; in index order). The parameter codes come from
    resources/compartment-patient.json, never from a request."""
    codes = ", ".join("'" + p.replace("'", "''") + "'" for p in params) or "NULL"
    # by res_pk alone (its index): naming the type too lets SQLite's planner pick the (type, param, target)
    # index and scan every reference of the parameter (measured: a protected read at 0.4 of an open one)
    refs = f"FROM idx_reference x WHERE x.res_pk = resources.pk AND x.target_type = 'Patient' AND x.param IN ({codes})"
    if sqlite:
        return f"SELECT {_COLUMNS}, (SELECT json_group_array(x.target_id) {refs}) FROM resources WHERE res_type = ? AND res_id = ?"
    # an array (asyncpg decodes text[] itself), in the index's order: json_agg(... ORDER BY) with
    # its sort and text round trip cost PostgreSQL 10-20 us more per read (bench/search_floor-style loop)
    return f"SELECT {_COLUMNS}, ARRAY(SELECT x.target_id {refs}) FROM resources WHERE res_type = $1 AND res_id = $2"


def _patients(value) -> list[str]:
    """The Patient ids of the last column: a JSON array (SQLite) or a list (asyncpg's text[])."""
    if not value:
        return []
    return [p for p in (orjson.loads(value) if isinstance(value, (str, bytes)) else value) if p]


def configure_reader(conn: sqlite3.Connection) -> None:
    """The settings of a read connection: busy timeout, memory-mapped reads and a larger
    page cache (`db.SQLITE_MMAP_BYTES`); also used by bench/search_floor.py, so that the
    floor reads the database as the server does."""
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    conn.execute(f"PRAGMA cache_size=-{SQLITE_READER_CACHE_KIB}")


class SqliteReader:
    """One sqlite3 connection in autocommit, used from the event loop thread only."""

    _SQL = f"SELECT {_COLUMNS} FROM resources WHERE res_type = ? AND res_id = ?"

    def __init__(self, path: str):
        self.path = path
        self.conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        # check_same_thread=False only because the lifespan may open it on another
        # thread than the one serving requests; all lookups run on the loop thread.
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        configure_reader(self.conn)

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def read_current(self, res_type: str, res_id: str) -> StoredResource | None:
        row = self.conn.execute(self._SQL, (res_type, res_id)).fetchone()
        if row is None:
            return None
        # sqlite3 hands back the text SQLAlchemy stored; parse it as SQLAlchemy would
        return stored_from_row((*row[:4], datetime.fromisoformat(row[4]), *row[5:]))

    async def read_with_patients(self, res_type: str, res_id: str, params: tuple[str, ...]) -> tuple[StoredResource | None, list[str]]:
        """`read_current` and the Patient ids the resource's compartment parameters `params`
        reference, from the reference index in the same statement (one snapshot)."""
        sql = _with_patients_sql(params, sqlite=True)
        row = self.conn.execute(sql, (res_type, res_id)).fetchone()
        if row is None:
            return None, []
        return stored_from_row((*row[:4], datetime.fromisoformat(row[4]), *row[5:7])), _patients(row[7])

    async def fetch(self, sql: str, params: tuple) -> list[tuple]:
        """All rows of a compiled statement (qmark parameters), as tuples."""
        return self.conn.execute(sql, params).fetchall()


class PgReader:
    """asyncpg connections in two LIFOs of `size` slots each, connected lazily.

    Not asyncpg's pool: its acquire/release bookkeeping (and the session reset
    query it sends on release by default) cost as much CPU as the lookup itself.
    A slot holds a connection or None (free, connect on use); a connection that
    fails or is interrupted is dropped and its slot freed, never reused.

    Why two: reads by id run on connections that let PostgreSQL keep a generic plan
    (`plan_cache_mode=auto`: a primary-key lookup has one right plan, and planning it on
    every execution doubled PostgreSQL's CPU per read: 50 -> 105 us, 90 -> 185 us with the
    compartment subquery, bench/bench_protected.py's server). Searches (`fetch`) run on
    connections that plan every execution for its values (`force_custom_plan`, as the
    engine's: a generic plan of a skewed parameter can be orders of magnitude off)."""

    _SQL = f"SELECT {_COLUMNS} FROM resources WHERE res_type = $1 AND res_id = $2"

    def __init__(self, url: str, size: int, search_timeout_seconds: float = 0.0):
        self.url = url
        self.size = size
        self.search_timeout_ms = int(search_timeout_seconds * 1000)  # 0: none (statement_timeout of searches)
        self._slots: asyncio.LifoQueue | None = None  # reads by id (generic plans)
        self._search_slots: asyncio.LifoQueue | None = None  # searches (custom plans)

    async def open(self) -> None:
        self._slots, self._search_slots = asyncio.LifoQueue(), asyncio.LifoQueue()
        for _ in range(self.size - 1):
            self._slots.put_nowait(None)
            self._search_slots.put_nowait(None)
        self._search_slots.put_nowait(None)
        self._slots.put_nowait(await self._connect(self._slots))  # fail at start-up, not on the first read

    async def _connect(self, slots: asyncio.LifoQueue):
        by_id = slots is self._slots
        dsn, settings = _asyncpg_dsn(self.url, generic_plans=by_id)
        if not by_id and self.search_timeout_ms > 0:
            # a search that runs away (an unforeseen plan, a costly chain) is cancelled by the
            # database rather than holding a backend and a core for minutes: 503 `timeout`
            settings["statement_timeout"] = str(self.search_timeout_ms)
        return await asyncpg.connect(dsn, server_settings=settings)

    async def close(self) -> None:
        for slots in (self._slots, self._search_slots):
            while slots is not None and not slots.empty():
                conn = slots.get_nowait()
                if conn is not None:
                    await conn.close()
        self._slots = self._search_slots = None

    async def read_current(self, res_type: str, res_id: str) -> StoredResource | None:
        """The current row, or None. A connection that fails is dropped, never
        reused; after a failure on a pooled connection (closed by a restart or
        an idle timeout, or left mid-operation) the read is tried once more on
        a newly opened one (reads are idempotent). 503 (`faults.unavailable`)
        when the database cannot be reached."""
        row = await self._run(lambda conn: conn.fetchrow(self._SQL, res_type, res_id))
        return None if row is None else stored_from_row(row)

    async def read_with_patients(self, res_type: str, res_id: str, params: tuple[str, ...]) -> tuple[StoredResource | None, list[str]]:
        """`read_current` and the Patient ids the resource's compartment parameters `params`
        reference, from the reference index in the same statement (one snapshot)."""
        sql = _with_patients_sql(params, sqlite=False)
        row = await self._run(lambda conn: conn.fetchrow(sql, res_type, res_id))
        if row is None:
            return None, []
        return stored_from_row(row), _patients(row[7])

    async def fetch(self, sql: str, params: tuple) -> list:
        """All rows of a compiled statement ($n parameters), as asyncpg Records
        (indexable like tuples); the same retry and 503 as `read_current`."""
        return await self._run(lambda conn: conn.fetch(sql, *params), search=True)

    async def _run(self, op, search: bool = False):
        for attempt in (1, 2):
            slots = self._search_slots if search else self._slots
            conn = await slots.get()
            try:
                if attempt == 2 and conn is not None:
                    conn.terminate()  # its neighbours in the pool may be as stale as the first one
                    conn = None
                if conn is None or conn.is_closed():
                    conn = await self._connect(slots)
                result = await op(conn)
            except BaseException as exc:
                if isinstance(exc, asyncpg.QueryCanceledError):  # statement_timeout: the connection is fine
                    slots.put_nowait(conn)
                    raise query_cancelled() from None
                if conn is not None:
                    conn.terminate()
                slots.put_nowait(None)
                if isinstance(exc, Exception) and is_connection_error(exc):
                    if attempt == 1:
                        continue
                    raise unavailable() from None
                raise
            slots.put_nowait(conn)
            return result
        raise AssertionError("unreachable")


def _asyncpg_dsn(url: str, generic_plans: bool = False) -> tuple[str, dict[str, str]]:
    """The SQLAlchemy URL as an asyncpg DSN (TLS and host parameters such as
    `sslmode` carry over) and the server settings the sync engine also sets:
    `options=-c k=v` from the URL, then the planner settings, then our name.
    `generic_plans`: `plan_cache_mode=auto` instead of `force_custom_plan` (reads by id)."""
    u = make_url(url)
    given = u.query.get("options", "")
    given = " ".join(given) if isinstance(given, tuple) else given
    settings: dict[str, str] = {}
    for part in given.split("-c"):
        key, eq, value = part.strip().partition("=")
        if eq:
            settings[key.strip()] = value.strip()
    settings.update({"plan_cache_mode": "auto" if generic_plans else "force_custom_plan", "jit": "off",
                     "application_name": APPLICATION_NAME})
    dsn = u.set(drivername="postgresql").difference_update_query(["options"])
    return dsn.render_as_string(hide_password=False), settings


def reader_for(url: str, size: int, search_timeout_seconds: float = 0.0) -> SqliteReader | PgReader | None:
    """The reader for a database URL; None for an in-memory SQLite (no second connection can see it).
    `search_timeout_seconds` (PostgreSQL): the statement_timeout of its search connections."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        path = u.database or ""
        return SqliteReader(path) if path and path != ":memory:" and not path.startswith("file:") else None
    if u.get_backend_name() == "postgresql":
        return PgReader(url, size, search_timeout_seconds)
    return None
