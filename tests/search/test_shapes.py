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
from fhir_server.security.authz import Criteria

BASE = "http://example.org/fhir"
FAMILIES = ["Nowak", "Kowalski", "Hansen", "Jensen", "Öberg", "Łukasz", "de la Cruz", "O'Brien", "x", "Zz", "family", "ÅSA"]
SYSTEMS = ["http://loinc.org", "urn:oid:1.2.3", "http://snomed.info/sct", ""]
CODES = ["8867-4", "final", "abc", "X1", "preliminary", "0", "21"]


# Each generator takes `f`, the random source of the value's *form* (fixed per shape
# template), and `r`, the source of the value itself.


def _date(f: random.Random, r: random.Random) -> str:
    d = datetime(1950, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=r.randrange(60 * 24 * 365 * 70))
    form = f.choice(["y", "ym", "ymd", "ymdhm", "ymdhms", "tz"])
    text = {"y": f"{d:%Y}", "ym": f"{d:%Y-%m}", "ymd": f"{d:%Y-%m-%d}", "ymdhm": f"{d:%Y-%m-%dT%H:%M}Z",
            "ymdhms": f"{d:%Y-%m-%dT%H:%M:%S}Z", "tz": f"{d:%Y-%m-%dT%H:%M:%S}+02:00"}[form]
    return f.choice(["", "eq", "ge", "gt", "le", "lt", "ne", "sa", "eb"]) + text


def _token(f: random.Random, r: random.Random) -> str:
    form = f.choice(["code", "system|code", "|code", "system|"])
    system, code = r.choice(SYSTEMS[:-1]), r.choice(CODES)
    return {"code": code, "system|code": f"{system}|{code}", "|code": f"|{code}", "system|": f"{system}|"}[form]


def _choice(values):
    return lambda f, r: r.choice(values)


def _ref(target: str):
    def gen(f: random.Random, r: random.Random) -> str:
        return f.choice([f"{target}/{r.randrange(1000)}", f"id{r.randrange(1000)}", f"{target}/a-{r.randrange(99)}"])
    return gen


PARAMS = {
    "Patient": [("general-practitioner", _ref("Practitioner")), ("family", _choice(FAMILIES)), ("given", _choice(FAMILIES)),
                ("name", _choice(FAMILIES)), ("birthdate", _date), ("gender", _choice(["male", "female", "other", "unknown"])),
                ("active", _choice(["true", "false"])), ("identifier", _token)],
    "Observation": [("code", _token), ("status", _choice(CODES)), ("date", _date), ("category", _token),
                    ("patient", _ref("Patient")), ("subject", _ref("Patient"))],
    "Slot": [("status", _choice(["free", "busy"])), ("start", _date), ("schedule", _ref("Schedule"))],
    "Appointment": [("status", _choice(["booked", "cancelled"])), ("date", _date), ("patient", _ref("Patient")),
                    ("actor", _ref("Practitioner"))],
}
CONTROLS = [[], [("_count", "5")], [("_count", "0")], [("_total", "accurate")], [("_summary", "count")],
            [("_sort", "-_lastUpdated")], [("_sort", "birthdate")], [("_elements", "id")], [("_count", "50"), ("_total", "none")]]


def _access(f: random.Random, r: random.Random):
    """None (unrestricted), a patient's compartment, a granular scope, or both OR-ed."""
    pid = f"p{r.randrange(500)}"
    vis = f.choice([None, [Criteria(compartment=("Patient", pid))],
                    [Criteria(params=(("status", r.choice(["final", "booked", "free"])),))],
                    [Criteria(compartment=("Patient", pid), exclude=(("status", "entered-in-error"),))],
                    [Criteria(compartment=("Patient", pid)), Criteria(compartment=("Patient", "p" + pid))]])
    return None if vis is None else (lambda res_type, permission: vis)


def _request(template: int, r: random.Random) -> SearchRequest:
    """A search of shape template `template` with random values."""
    f = random.Random(template)
    res_type = f.choice(list(PARAMS))
    chosen = f.sample(PARAMS[res_type], f.randint(1, min(3, len(PARAMS[res_type]))))
    params = [(name, gen(f, r)) for name, gen in chosen]
    controls = f.choice(CONTROLS)
    if res_type != "Patient":
        controls = [c for c in controls if c[1] != "birthdate"]
    base = f.choice([BASE, "https://portal.example.se/r4"])
    return SearchRequest(res_type, params + controls, base, access=_access(f, r))


def _hit(cache: CompiledCache, req: SearchRequest):
    ticket = cache.shapes.ticket(req)
    return None if ticket is None else cache.shapes.plan(req, ticket)


def _learn(cache: CompiledCache, req: SearchRequest, prep, page, count) -> bool:
    ticket = cache.shapes.ticket(req)
    if ticket is None or not cache.shapes.learnable(ticket):
        return False
    cache.shapes.learn(ticket, prep, page, count, [])
    return True


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
    for _ in range(2000):
        req = _request(rnd.randrange(150), rnd)
        try:
            prep, page, count = _engine(cache, req)
        except Exception as exc:  # the engine refuses it (e.g. _sort by a parameter of another type)
            assert not isinstance(exc, AssertionError)
            continue
        planned += 1
        hit = _hit(cache, req)
        if hit is None:
            _learn(cache, req, prep, page, count)
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
    assert planned > 1800
    assert hits > planned // 2, f"only {hits} of {planned} searches were filled in from learned shapes"
    assert len(cache.shapes) > 75


@pytest.mark.parametrize("first, second", [
    ([("status", "status")], [("status", "final")]),  # a value equal to the parameter's code
    ([("patient", "Patient/p7")], [("patient", "Patient/p8")]),  # a patient searching for themselves, or not
    ([("code", "abc|abc")], [("code", "abc|abd")]),  # system and code alike
])
def test_coinciding_values_are_part_of_the_shape(first, second):
    """A statement parameter that equals two sources at once could come from either: which
    values coincide is part of the key, so a search where they coincide and one where they
    do not have different shapes, and each is filled in as the engine plans it."""
    cache = CompiledCache(SQLiteDialect_pysqlite())
    vis = [Criteria(compartment=("Patient", "p7"))]
    for params in (first, second, first, second, first, second):
        req = SearchRequest("Observation", params, BASE, access=lambda t, p: vis)
        prep, page, count = _engine(cache, req)
        hit = _hit(cache, req)
        if hit is None:
            assert _learn(cache, req, prep, page, count)
        else:
            assert hit[1] == _processed(page) and hit[2] == _processed(count)
    assert len(cache.shapes) == 2 and cache.shapes.hits == 4


@pytest.mark.parametrize("params", [
    [("family:exact", "x")], [("family", "a,b")], [("family", "a\\,b")], [("_id", "x")],
    [("birthdate", "ap2000")], [("birthdate", "notadate")],
    [("active", "maybe")], [("family", "x"), ("_cursor", "abc")], [("family", "x"), ("_include", "Patient:organization")],
    [("identifier", "19121212-1212")], [("identifier", "urn:oid:1.2.752.129.2.1.3.1|191212121212")],
    [("general-practitioner", "http://other.example/fhir/Practitioner/1")], [("general-practitioner", "Practitioner/1|2")],
])
def test_other_forms_are_left_to_the_engine(params):
    cache = CompiledCache(SQLiteDialect_pysqlite())
    assert cache.shapes.ticket(SearchRequest("Patient", params, BASE)) is None


@pytest.mark.parametrize("vis", [[], [Criteria(compartment=("Patient", "1"), conditions=("case-consent",))]])
def test_access_the_shapes_cannot_express_is_left_to_the_engine(vis):
    """Nothing visible (the engine answers), and rules that depend on the time of the request."""
    req = SearchRequest("DocumentReference", [("status", "current")], BASE, access=lambda t, p: vis)
    assert CompiledCache(SQLiteDialect_pysqlite()).shapes.ticket(req) is None


def test_visibility_is_asked_once_per_request():
    calls = []
    req = SearchRequest("Observation", [("status", "final")], BASE,
                        access=shapes.answering_once(lambda t, p: calls.append((t, p)) or [Criteria(compartment=("Patient", "7"))]))
    cache = CompiledCache(SQLiteDialect_pysqlite())
    ticket = cache.shapes.ticket(req)
    prep, page, count = _engine(cache, req)
    cache.shapes.learn(ticket, prep, page, count, [])
    assert calls == [("Observation", "s")] and len(cache.shapes) == 1


def test_a_shape_that_disagrees_with_the_engine_is_dropped(caplog):
    cache = CompiledCache(SQLiteDialect_pysqlite())
    req = SearchRequest("Patient", [("family", "nowak")], BASE)
    prep, page, count = _engine(cache, req)
    _learn(cache, req, prep, page, count)
    _, fast_page, fast_count, _, shape = _hit(cache, req)
    planned = (_processed(page), _processed(count))
    assert cache.shapes.verified(shape, (fast_page, fast_count), planned)
    wrong = (fast_page[0], fast_page[1][:-1] + (99,))
    assert not cache.shapes.verified(shape, (wrong, fast_count), planned)
    assert _hit(cache, req) is None and len(cache.shapes) == 0
    assert not cache.shapes.learnable(cache.shapes.ticket(req))
    assert "other SQL than the planner" in caplog.text
    assert shapes.VERIFY_HITS >= 1
