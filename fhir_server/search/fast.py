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
from dataclasses import replace
from typing import Any

from sqlalchemy.engine import Dialect

from ..errors import FhirError
from ..storage.async_reads import PgReader, SqliteReader
from .shapes import ShapeCache, answering_once
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
        self.shapes = ShapeCache()  # searches of a learned shape skip planning (search.shapes)

    def render(self, stmt) -> tuple[str, tuple]:
        """(SQL text, positional parameters after the dialect's bind processing).
        NotFast when the statement cannot be run as a plain positional string."""
        return _processed(self.parts(stmt))

    def parts(self, stmt) -> tuple[str, tuple, tuple]:
        """(SQL text, positional parameter values before bind processing, the processor of
        each or None); NotFast as `render`."""
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
        return sql, tuple(values[n] for n in names), tuple(procs.get(n) for n in names)


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
    statements need SQLAlchemy's execution. A search of a learned shape
    (`search.shapes`) is filled in without planning."""
    cache = cache_for(reader)
    req = replace(req, access=answering_once(req.access))
    ticket = cache.shapes.ticket(req)
    hit = cache.shapes.plan(req, ticket) if ticket is not None else None
    if hit is not None:
        prep, page, count, key_procs, shape = hit
        if shape.verify_left <= 0 or _verified(cache, req, shape, page, count):
            return await _execute(reader, prep, page, lambda: count, key_procs)
    prep: PreparedSearch = prepare_search(None, req)
    if prep.plan.includes:
        raise NotFast("includes are run by the engine")
    page_parts = cache.parts(prep.page_q) if prep.page_q is not None else None
    key_procs = _key_processors(prep, cache.dialect) if prep.nkeys else []
    if hit is None and ticket is not None and cache.shapes.learnable(ticket):
        count_parts = cache.parts(prep.count_q)
        cache.shapes.learn(ticket, prep, page_parts, count_parts, key_procs)
        count = lambda: _processed(count_parts)  # noqa: E731
    else:
        count = lambda: cache.render(prep.count_q)  # noqa: E731  (rendered only when the total is needed)
    page = _processed(page_parts) if page_parts is not None else None
    return await _execute(reader, prep, page, count, key_procs)


def _processed(parts: tuple[str, tuple, tuple]) -> tuple[str, tuple]:
    sql, raw, procs = parts
    return sql, tuple(p(v) if p is not None else v for v, p in zip(raw, procs))


def _verified(cache: CompiledCache, req: SearchRequest, shape, page, count) -> bool:
    """One of a shape's first hits: the engine plans it too; True when both agree."""
    planned = prepare_search(None, req)
    expect = (cache.render(planned.page_q) if planned.page_q is not None else None, cache.render(planned.count_q))
    return cache.shapes.verified(shape, (page, count), expect)


async def _execute(reader, prep: PreparedSearch, page: tuple | None, count, key_procs: list) -> bytes:
    """Run the page statement (sql, params), and the count statement (`count()` gives it)
    when the Bundle's total needs it; the Bundle's bytes."""
    if page is None:
        return assemble_search(prep, [], False, await _scalar(reader, count()))
    fetched = await reader.fetch(*page)
    if prep.nkeys:
        raw = [_Row((*r[:4], *(p(v) if p else v for p, v in zip(key_procs, r[4:4 + prep.nkeys])))) for r in fetched]
    else:
        raw = [_Row(r[:4]) for r in fetched]
    rows, more = page_of(prep, raw)
    total = await _scalar(reader, count()) if needs_count(prep, more) else None
    return assemble_search(prep, rows, more, total)


def _key_processors(prep: PreparedSearch, dialect: Dialect) -> list:
    """Per sort key, the driver-to-Python conversion SQLAlchemy applies to that column
    (e.g. SQLite's ISO text to an aware datetime), or None; the cursors of the `next` and
    `previous` links are built from the converted values, as on the engine's path."""
    cols = list(prep.page_q.selected_columns)[4:4 + prep.nkeys]
    return [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in cols]


async def _scalar(reader, statement: tuple[str, tuple]) -> int:
    rows = await reader.fetch(*statement)
    if not rows:
        raise FhirError.of(500, "exception", "count returned no row")
    return int(rows[0][0])
