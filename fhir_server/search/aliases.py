"""Table aliases for search statements, reused across statements instead of built per use.

Each search parameter becomes a subquery over an alias of an index table. Building an
alias is cheap, but its column collection (`alias.c`, a proxy per column) is built on
first use and was about a third of the CPU of planning a search. The aliases here are
built once, with their columns, and handed out in order while one statement is planned
(`planning()`): the n-th alias of a table in a statement is always the same object, so
no two places in one statement share an alias (a nested subquery would otherwise be
correlated to its enclosing query), while every statement reuses the same few objects.
SQLAlchemy elements are immutable once built, so sharing them between threads is safe;
anonymous aliases are named at compile time, so the SQL and the statement cache key are
the same as with a fresh alias.

Outside `planning()` (statements built elsewhere), `alias_of` returns a fresh alias.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Table
from sqlalchemy.sql import FromClause

_POOL: dict[str, list[FromClause]] = {}
_in_use: ContextVar[dict[str, int] | None] = ContextVar("search_alias_use", default=None)


@contextmanager
def planning():
    """Scope of one statement's planning: aliases handed out inside are distinct."""
    token = _in_use.set({})
    try:
        yield
    finally:
        _in_use.reset(token)


def alias_of(table: Table) -> FromClause:
    """An anonymous alias of `table`, distinct from every other one given out in the
    current `planning()` scope (a fresh one outside it)."""
    used = _in_use.get()
    if used is None:
        return table.alias()
    n = used.get(table.name, 0)
    used[table.name] = n + 1
    pool = _POOL.setdefault(table.name, [])
    while len(pool) <= n:
        alias = table.alias()
        alias.c  # build the column collection once, now
        pool.append(alias)
    return pool[n]
