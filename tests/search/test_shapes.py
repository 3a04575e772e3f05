"""Learned search shapes (search/shapes.py) give exactly the engine's SQL and parameters.

Thousands of generated searches of many shapes, on both dialects: each is planned by the
engine (`prepare_search`, rendered as the fast path renders it) and, once its shape is
learned, filled in from the shape; both must be identical, statement text and every
bound value. The engine stays the only source of truth: a shape is learned from its
statements, never written by hand.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from fhir_server.search import shapes
from fhir_server.search.engine import SearchRequest, prepare_search
from fhir_server.search.fast import CompiledCache

BASE = "http://example.org/fhir"
FAMILIES = ["Nowak", "Kowalski", "Hansen", "Jensen", "Öberg", "Łukasz", "de la Cruz", "O'Brien", "x", "Zz", "family", "ÅSA"]
SYSTEMS = ["http://loinc.org", "urn:oid:1.2.3", "http://snomed.info/sct", ""]
CODES = ["8867-4", "final", "abc", "X1", "preliminary", "0", "21"]


def _date(rnd: random.Random) -> str:
    d = datetime(1950, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=rnd.randrange(60 * 24 * 365 * 70))
    form = rnd.choice(["y", "ym", "ymd", "ymdhm", "ymdhms", "tz"])
    text = {"y": f"{d:%Y}", "ym": f"{d:%Y-%m}", "ymd": f"{d:%Y-%m-%d}", "ymdhm": f"{d:%Y-%m-%dT%H:%M}Z",
            "ymdhms": f"{d:%Y-%m-%dT%H:%M:%S}Z", "tz": f"{d:%Y-%m-%dT%H:%M:%S}+02:00"}[form]
    return rnd.choice(["", "eq", "ge", "gt", "le", "lt", "ne", "sa", "eb"]) + text


def _token(rnd: random.Random) -> str:
    form = rnd.choice(["code", "system|code", "|code", "system|"])
    system, code = rnd.choice(SYSTEMS[:-1]), rnd.choice(CODES)
    return {"code": code, "system|code": f"{system}|{code}", "|code": f"|{code}", "system|": f"{system}|"}[form]


PARAMS = {
    "Patient": [("family", lambda r: r.choice(FAMILIES)), ("given", lambda r: r.choice(FAMILIES)),
                ("name", lambda r: r.choice(FAMILIES)), ("birthdate", _date),
                ("gender", lambda r: r.choice(["male", "female", "other", "unknown"])),
                ("active", lambda r: r.choice(["true", "false"])), ("identifier", _token)],
    "Observation": [("code", _token), ("status", lambda r: r.choice(CODES)), ("date", _date),
                    ("category", _token)],
    "Slot": [("status", lambda r: r.choice(["free", "busy"])), ("start", _date)],
    "Appointment": [("status", lambda r: r.choice(["booked", "cancelled"])), ("date", _date)],
}
CONTROLS = [[], [("_count", "5")], [("_count", "0")], [("_total", "accurate")], [("_summary", "count")],
            [("_sort", "-_lastUpdated")], [("_sort", "birthdate")], [("_elements", "id")], [("_count", "50"), ("_total", "none")]]


def _request(rnd: random.Random) -> SearchRequest:
    res_type = rnd.choice(list(PARAMS))
    chosen = rnd.sample(PARAMS[res_type], rnd.randint(1, min(3, len(PARAMS[res_type]))))
    params = [(name, gen(rnd)) for name, gen in chosen]
    controls = rnd.choice(CONTROLS)
    if res_type != "Patient":
        controls = [c for c in controls if c[1] != "birthdate"]
    return SearchRequest(res_type, params + controls, BASE)


def _engine(cache: CompiledCache, req: SearchRequest):
    prep = prepare_search(None, req)
    page = cache.parts(prep.page_q) if prep.page_q is not None else None
    return prep, page, cache.parts(prep.count_q)


def _processed(parts):
    sql, raw, procs = parts
    return sql, tuple(p(v) if p is not None else v for v, p in zip(raw, procs))


@pytest.mark.parametrize("dialect", [SQLiteDialect_pysqlite, PGDialect_asyncpg], ids=["sqlite", "asyncpg"])
def test_learned_shapes_fill_in_the_engines_statements(dialect):
    cache = CompiledCache(dialect())
    rnd = random.Random(19)
    hits = planned = 0
    for _ in range(3000):
        req = _request(rnd)
        try:
            prep, page, count = _engine(cache, req)
        except Exception as exc:  # the engine refuses it (e.g. _sort by a parameter of another type)
            assert cache.shapes.plan(req) is None or not isinstance(exc, AssertionError)
            continue
        planned += 1
        hit = cache.shapes.plan(req)
        if hit is None:
            if cache.shapes.learnable(req):
                cache.shapes.learn(req, prep, page, count, [])
            continue
        hits += 1
        fast_prep, fast_page, fast_count, _, _ = hit
        assert fast_page == (_processed(page) if page is not None else None), req.params
        assert fast_count == _processed(count), req.params
        assert (fast_prep.nkeys, fast_prep.forward, fast_prep.sig) == (prep.nkeys, prep.forward, prep.sig)
        assert (fast_prep.plan.accepted, fast_prep.plan.count, fast_prep.plan.total, fast_prep.plan.summary,
                fast_prep.plan.elements, fast_prep.plan.sort) == \
            (prep.plan.accepted, prep.plan.count, prep.plan.total, prep.plan.summary, prep.plan.elements, prep.plan.sort)
        assert (fast_prep.base, fast_prep.path_url) == (prep.base, prep.path_url)
    assert planned > 2500
    assert hits > planned // 4, f"only {hits} of {planned} searches were filled in from learned shapes"
    assert len(cache.shapes) > 50


def test_values_the_shape_cannot_tell_apart_are_not_learned():
    """A value equal to a shape constant (here the parameter's own code) could be either:
    the shape is not learned from it, and later searches are not filled in wrongly."""
    cache = CompiledCache(SQLiteDialect_pysqlite())
    req = SearchRequest("Patient", [("family", "family")], BASE)
    prep, page, count = _engine(cache, req)
    cache.shapes.learn(req, prep, page, count, [])
    assert len(cache.shapes) == 0
    other = SearchRequest("Patient", [("family", "nowak")], BASE)
    assert cache.shapes.plan(other) is None
    prep, page, count = _engine(cache, other)
    cache.shapes.learn(other, prep, page, count, [])
    assert len(cache.shapes) == 1
    _, fast_page, _, _, _ = cache.shapes.plan(req)
    assert fast_page == _processed(_engine(cache, req)[1])


@pytest.mark.parametrize("params", [
    [("family:exact", "x")], [("family", "a,b")], [("family", "a\\,b")], [("_id", "x")],
    [("general-practitioner", "Practitioner/1")], [("birthdate", "ap2000")], [("birthdate", "notadate")],
    [("active", "maybe")], [("family", "x"), ("_cursor", "abc")], [("family", "x"), ("_include", "Patient:organization")],
    [("identifier", "19121212-1212")], [("identifier", "urn:oid:1.2.752.129.2.1.3.1|191212121212")],
])
def test_other_forms_are_left_to_the_engine(params):
    cache = CompiledCache(SQLiteDialect_pysqlite())
    req = SearchRequest("Patient", params, BASE)
    assert not cache.shapes.learnable(req)
    assert cache.shapes.plan(req) is None


def test_restricted_access_is_left_to_the_engine():
    req = SearchRequest("Patient", [("family", "x")], BASE, access=lambda t, p: [])
    assert not CompiledCache(SQLiteDialect_pysqlite()).shapes.learnable(req)


def test_a_shape_that_disagrees_with_the_engine_is_dropped(caplog):
    cache = CompiledCache(SQLiteDialect_pysqlite())
    req = SearchRequest("Patient", [("family", "nowak")], BASE)
    prep, page, count = _engine(cache, req)
    cache.shapes.learn(req, prep, page, count, [])
    _, fast_page, fast_count, _, shape = cache.shapes.plan(req)
    planned = (_processed(page), _processed(count))
    assert cache.shapes.verified(shape, (fast_page, fast_count), planned)
    wrong = (fast_page[0], fast_page[1][:-1] + (99,))
    assert not cache.shapes.verified(shape, (wrong, fast_count), planned)
    assert cache.shapes.plan(req) is None and len(cache.shapes) == 0
    assert not cache.shapes.learnable(req)
    assert "other SQL than the planner" in caplog.text
    assert shapes.VERIFY_HITS >= 1
