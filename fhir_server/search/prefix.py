"""Conditions written so each database can use its indexes: `starts with` on a normalised
index column, and a type filter that does not compete with better-narrowing index rows.

The default string search (http://hl7.org/fhir/R4/search.html#string: "starts with",
case- and accent-insensitive) compares the casefolded, accent-stripped `value_norm`.
Written as `value_norm LIKE 'p%' ESCAPE '\\'`, SQLite cannot use the (res_type, param,
value_norm) index for the prefix (its LIKE optimisation needs a NOCASE column and no ESCAPE),
so `Patient?family=F` read every Patient's family name: 2.3 ms at 5,000 Patients, growing
with the table. On SQLite, whose BINARY collation orders text by code point, "starts with p"
is exactly the range `p <= value_norm < successor(p)`, which the index answers.

PostgreSQL cannot use its index for the LIKE either (outside the C locale a LIKE prefix needs
a pattern-ops index, and even then not in the generic plan of a prepared statement, whose
pattern is a parameter): at 5,000 Patients the issue's `family` search read all 5,000 family
rows per candidate, 50 ms. There the range is compared in the "C" collation (byte order of
UTF-8, i.e. code-point order, so exactly "starts with" whatever the database's collation),
which the index `ix_idx_string_value_norm_c` (migration 0019) answers.
"""

from __future__ import annotations

from sqlalchemy import String, and_, bindparam, intersect
from sqlalchemy.types import NullType
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from .values import like_escape

_MAX = 0x10FFFF


def successor(prefix: str) -> str | None:
    """The least string greater than every string that starts with `prefix`, in code-point
    order; None when there is none (empty prefix, or its last character is U+10FFFF)."""
    if not prefix or ord(prefix[-1]) == _MAX:
        return None
    nxt = ord(prefix[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates are no characters (and cannot be stored as UTF-8)
        nxt = 0xE000
    return prefix[:-1] + chr(nxt)


class StartsWith(ColumnElement):
    """`column` starts with `prefix` (already normalised as the column is); cacheable, with the
    prefix bound as parameters, so statements of one shape share one compiled form."""

    inherit_cache = True
    type = NullType()  # not Boolean: SQLite would compare the whole condition "= 1", hiding the range from the index
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("pattern", InternalTraversal.dp_clauseelement),
        ("low", InternalTraversal.dp_clauseelement),
        ("high", InternalTraversal.dp_clauseelement),
        ("ranged", InternalTraversal.dp_boolean),  # the two forms compile differently
    ]

    def __init__(self, column, prefix: str):
        self.column = column
        self.pattern = bindparam(None, like_escape(prefix) + "%", String, unique=True)
        self.low = bindparam(None, prefix, String, unique=True)
        self.high = bindparam(None, successor(prefix) or "", String, unique=True)
        self.ranged = successor(prefix) is not None


@compiles(StartsWith)
def _like(element: StartsWith, compiler, **kw) -> str:
    return f"{compiler.process(element.column, **kw)} LIKE {compiler.process(element.pattern, **kw)} ESCAPE '\\'"


@compiles(StartsWith, "sqlite")
def _range(element: StartsWith, compiler, **kw) -> str:
    if not element.ranged:
        return _like(element, compiler, **kw)
    col = compiler.process(element.column, **kw)
    return f"({col} >= {compiler.process(element.low, **kw)} AND {col} < {compiler.process(element.high, **kw)})"


class NoIndexHint(ColumnElement):
    """`column` as SQLite's `+column`: the same value, but SQLite will not drive the query by
    an index on it (https://sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_). Used for
    `res_type = ?` when an index row subquery (`pk IN (...)`) already narrows a search: without
    table statistics SQLite otherwise walks every resource of the type and probes the lists.
    Other databases get the plain column."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column):
        self.column = column
        self.type = column.type


@compiles(NoIndexHint)
def _plain(element: NoIndexHint, compiler, **kw) -> str:
    return compiler.process(element.column, **kw)


@compiles(NoIndexHint, "sqlite")
def _unary_plus(element: NoIndexHint, compiler, **kw) -> str:
    return "+" + compiler.process(element.column, **kw)


@compiles(StartsWith, "postgresql")
def _range_c(element: StartsWith, compiler, **kw) -> str:
    if not element.ranged:
        return _like(element, compiler, **kw)
    col = compiler.process(element.column, **kw) + ' COLLATE "C"'
    return f"({col} >= {compiler.process(element.low, **kw)} AND {col} < {compiler.process(element.high, **kw)})"


class InEvery(ColumnElement):
    """`column IN (s1) AND column IN (s2) ...`: a search's positive index-row matches.
    SQLite gets `column IN (s1 INTERSECT s2 ...)`: it materialises every such list anyway,
    and then probes the resources table only for keys in all of them, instead of reading the
    row of every key of the first list (at 5,000 Patients family+birthdate read 100 rows to
    return 3: 0.11 -> 0.07 ms). PostgreSQL, which plans semi-joins from statistics and would
    compute every set in full for an INTERSECT, keeps the AND."""

    inherit_cache = True
    type = NullType()  # as StartsWith: no "= 1" around it on SQLite
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("subqueries", InternalTraversal.dp_clauseelement_list),
    ]

    def __init__(self, column, subqueries):
        self.column = column
        self.subqueries = list(subqueries)


@compiles(InEvery)
def _in_each(element: InEvery, compiler, **kw) -> str:
    return compiler.process(and_(*(element.column.in_(s) for s in element.subqueries)), **kw)


@compiles(InEvery, "sqlite")
def _in_intersection(element: InEvery, compiler, **kw) -> str:
    return compiler.process(element.column.in_(intersect(*element.subqueries)), **kw)
