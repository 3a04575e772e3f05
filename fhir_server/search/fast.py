"""Searches run on the event loop: compiled SQL cached by shape, the async reader's driver.

A search through the thread pool costs, besides the database, SQLAlchemy's
execution machinery and two thread hand-offs under the GIL. Here the statements
`engine.prepare_search` plans (the same ones `execute_search` runs, access
criteria included) are compiled once per *shape* for the reader's driver
(sqlite3 or asyncpg) and executed on the event loop; the Bundle is assembled by
`engine.assemble_search` from the stored bytes, so both paths give the same
Bundle.

The cache key is SQLAlchemy's own statement cache key: it covers the
statement's structure with every literal value bound, never inlined, so two
searches that differ only in their values share one compiled string and one
server-side prepared statement (asyncpg's statement cache).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from sqlalchemy.engine import Dialect

from ..errors import FhirError
from ..storage.async_reads import PgReader, SqliteReader
from .engine import PreparedSearch, SearchRequest, assemble_search, needs_count, page_of, prepare_search

CACHE_SIZE = 512  # compiled statements kept per dialect (a shape is small; searches have few shapes)


class NotFast(Exception):
    """The search needs what only the engine's path does (includes)."""


class _Row(tuple):
    """A page row as the Bundle assembly reads it: pk, res_type, res_id, content, then
    the sort keys k0, k1, ... (converted as SQLAlchemy's result processing would)."""

    __slots__ = ()
    pk = property(lambda self: self[0])
    res_type = property(lambda self: self[1])
    res_id = property(lambda self: self[2])
    content = property(lambda self: self[3])


class CompiledCache:
    """Compiled SQL strings per statement shape for one dialect (LRU of `size`)."""

    def __init__(self, dialect: Dialect, size: int = CACHE_SIZE):
        self.dialect = dialect
        self.size = size
        self._cache: OrderedDict[Any, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def render(self, stmt) -> tuple[str, tuple]:
        """(SQL text, positional parameters after the dialect's bind processing).
        NotFast when the statement cannot be run as a plain positional string."""
        key = stmt._generate_cache_key()
        if key is None:
            raise NotFast("statement has no cache key")
        compiled = self._cache.get(key.key)
        if compiled is None:
            self.misses += 1
            compiled = stmt.compile(dialect=self.dialect, cache_key=key)
            if compiled.positiontup is None:
                raise NotFast("the dialect does not compile positional parameters")
            self._cache[key.key] = compiled
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        else:
            self.hits += 1
            self._cache.move_to_end(key.key)
        values = compiled.construct_params(extracted_parameters=key.bindparams, escape_names=False)
        if compiled.post_compile_params or compiled.literal_execute_params:
            # IN (...) over a list: rendered per call with one parameter per element, as SQLAlchemy does
            state = compiled._process_parameters_for_postcompile(values)
            sql, names, values, procs = state.statement, state.positiontup, state.parameters, state.processors
        else:
            sql, names, procs = compiled.string, compiled.positiontup, compiled._bind_processors
        return sql, tuple(procs[n](values[n]) if n in procs else values[n] for n in names)


_caches: dict[str, CompiledCache] = {}


def cache_for(reader) -> CompiledCache:
    """The compiled-SQL cache for a reader's driver (sqlite3: qmark; asyncpg: $n)."""
    kind = "sqlite" if isinstance(reader, SqliteReader) else "asyncpg"
    cache = _caches.get(kind)
    if cache is None:
        if kind == "sqlite":
            from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite as D
        else:
            from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg as D
        cache = _caches[kind] = CompiledCache(D())
    return cache


async def run_search(reader: SqliteReader | PgReader, req: SearchRequest) -> bytes:
    """The searchset Bundle for `req` (no _include/_revinclude: `engine` runs
    those), as `engine.execute_search` would give it. FhirError as the planner
    raises it (400 and the like; 503 from the reader); NotFast when the
    statements need SQLAlchemy's execution."""
    prep: PreparedSearch = prepare_search(None, req)
    if prep.plan.includes:
        raise NotFast("includes are run by the engine")
    cache = cache_for(reader)
    if prep.page_q is None:
        return assemble_search(prep, [], False, await _scalar(reader, cache, prep.count_q))
    sql, params = cache.render(prep.page_q)
    fetched = await reader.fetch(sql, params)
    if prep.nkeys:
        keys = _key_processors(prep, cache.dialect)
        raw = [_Row((*r[:4], *(p(v) if p else v for p, v in zip(keys, r[4:4 + prep.nkeys])))) for r in fetched]
    else:
        raw = [_Row(r[:4]) for r in fetched]
    rows, more = page_of(prep, raw)
    total = await _scalar(reader, cache, prep.count_q) if needs_count(prep, more) else None
    return assemble_search(prep, rows, more, total)


def _key_processors(prep: PreparedSearch, dialect: Dialect) -> list:
    """Per sort key, the driver-to-Python conversion SQLAlchemy applies to that column
    (e.g. SQLite's ISO text to an aware datetime), or None; the cursors of the `next` and
    `previous` links are built from the converted values, as on the engine's path."""
    cols = list(prep.page_q.selected_columns)[4:4 + prep.nkeys]
    return [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in cols]


async def _scalar(reader, cache: CompiledCache, stmt) -> int:
    sql, params = cache.render(stmt)
    rows = await reader.fetch(sql, params)
    if not rows:
        raise FhirError.of(500, "exception", "count returned no row")
    return int(rows[0][0])
