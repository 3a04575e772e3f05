"""Plain type searches answered in front of the router (api/fast_search.py) must
be the Bundles the app gives - for every principal, restricted ones included -
and leave everything else to the app."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.api import fast_search
from fhir_server.search import fast

IGNORED = {"date", "x-request-id", "server"}


@pytest.fixture
def spy(monkeypatch):
    """Counts the searches the fast path answered."""
    calls = []
    real = fast_search.run_search

    async def counting(reader, req):
        body = await real(reader, req)
        calls.append(req)
        return body

    monkeypatch.setattr(fast_search, "run_search", counting)
    return calls


@pytest.fixture
def family(client):
    """Seven Patients of a family unique to the test, two of them with Observations."""
    fam = "Fs" + uuid.uuid4().hex[:10]
    ids = []
    for i in range(7):
        body = {"resourceType": "Patient", "name": [{"family": fam, "given": [f"G{i}"]}],
                "gender": "male" if i % 2 else "female", "birthDate": f"19{80 + i % 3}-0{1 + i % 3}-1{i % 3}",
                "identifier": [{"system": "urn:fast", "value": f"{fam}-{i}"}]}
        r = client.post("/fhir/Patient", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for pid in ids[:2]:
        for code in ("8867-4", "8310-5"):
            obs = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
                   "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": fam}}
            assert client.post("/fhir/Observation", json=obs).status_code == 201
    return fam, ids


def _same(fast, routed):
    """The two answers agree in status, headers and Bundle (but its id and meta.lastUpdated)."""
    assert fast.status_code == routed.status_code
    assert {k: v for k, v in fast.headers.items() if k not in IGNORED} == \
        {k: v for k, v in routed.headers.items() if k not in IGNORED}
    a, b = fast.json(), routed.json()
    if a.get("resourceType") == "Bundle":
        for x in (a, b):
            x.pop("id")
            x["meta"].pop("lastUpdated")
    assert a == b
    return a


def _both(client, path, spy, headers=None, fast_expected=True):
    """GET `path` as it is (the fast path) and with `_pretty=false`, which changes
    nothing in the answer but takes it through the router."""
    before = len(spy)
    fast = client.get(path, headers=headers or {})
    assert len(spy) == before + (1 if fast_expected else 0), f"fast path {'not ' if fast_expected else ''}taken"
    routed = client.get(path + "&_pretty=false", headers=headers or {})
    assert len(spy) == before + (1 if fast_expected else 0)
    return _same(fast, routed)


QUERIES = [
    "family={fam}",
    "family={fam}&birthdate=1981-02-11",
    "family={fam}&birthdate=ge1981&gender=male",
    "family={fam}&_count=2",
    "family={fam}&_count=3&_total=accurate",
    "family={fam}&_total=none",
    "family={fam}&_summary=count",
    "family={fam}&_summary=true",
    "family={fam}&_elements=gender",
    "family={fam}&_count=0",
    "identifier=urn:fast|{fam}-3",
    "name={fam}&gender=female",
    "family={fam}&_lastUpdated=gt2000-01-01",
    "family=&gender=male&family={fam}",
    "family={fam}&_sort=birthdate",
    "family={fam}&_sort=-birthdate,given&_count=2",
    "family={fam}&_sort=-_lastUpdated&_count=3",
    "family={fam}&_sort=gender,-_id",
    "family={fam}&_sort=-identifier&_count=4",
]


@pytest.mark.parametrize("query", QUERIES)
def test_same_bundles_as_the_app(client, family, spy, query):
    fam, _ = family
    bundle = _both(client, "/fhir/Patient?" + query.format(fam=fam), spy)
    assert bundle["resourceType"] == "Bundle"


@pytest.mark.parametrize("sort", ["", "birthdate", "-birthdate,given", "-_lastUpdated", "gender,-_id"])
def test_pages_follow_the_same_links(client, family, spy, sort):
    """Page by page, both paths give the same links; sorted pages' cursors carry the sort
    keys (dates among them). Every match comes once, in the order of the whole result."""
    fam, ids = family
    order = f"&_sort={sort}" if sort else ""
    path = f"/fhir/Patient?family={fam}{order}&_count=3"
    seen = []
    for _ in range(5):
        bundle = _both(client, path, spy)
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        u = urlsplit(nxt[0])
        path = u.path + "?" + u.query
        assert "_cursor" in dict(parse_qsl(u.query))
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
    whole = client.get(f"/fhir/Patient?family={fam}{order}&_pretty=false").json()
    assert seen == [e["resource"]["id"] for e in whole["entry"]]


def test_values_bound_not_inlined(client, family, spy):
    """Two searches of one shape share one compiled statement."""
    fam, ids = family
    client.get(f"/fhir/Patient?family={fam}&birthdate=1980-01-10")
    cache = next(iter(fast._caches.values()))
    size, misses = len(cache._cache), cache.misses
    r = client.get(f"/fhir/Patient?family={fam}&birthdate=1981-02-11")
    assert r.status_code == 200 and len(cache._cache) == size and cache.misses == misses
    assert sorted(e["resource"]["id"] for e in r.json()["entry"]) == sorted([ids[1], ids[4]])


@pytest.mark.parametrize("query", ["Observation?code=http://loinc.org|8867-4", "Observation?status=final",
                                   "Patient?family={fam}", "Patient?_id={first},{third}"])
def test_restricted_tokens_see_what_the_app_shows(client, family, spy, issue_token, query):
    fam, ids = family
    path = "/fhir/" + query.format(fam=fam, first=ids[0], third=ids[2])
    patient_token = {"Authorization": f"Bearer {issue_token('patient/*.rs', patient=ids[0])}"}
    bundle = _both(client, path, spy, patient_token)
    for e in bundle.get("entry", []):
        res = e["resource"]
        own = res["id"] if res["resourceType"] == "Patient" else res["subject"]["reference"].split("/")[1]
        assert own == ids[0], "a patient token saw another patient's data"
    if query.startswith("Patient"):
        assert [e["resource"]["id"] for e in bundle["entry"]] == [ids[0]]
    else:
        assert bundle["entry"] and {e["resource"]["subject"]["reference"] for e in bundle["entry"]} == {f"Patient/{ids[0]}"}
    # a granular scope: only Observations with that code
    granular = {"Authorization": f"Bearer {issue_token('system/Observation.rs?code=http://loinc.org|8310-5')}"}
    if query.startswith("Observation"):
        bundle = _both(client, path, spy, granular)
        codes = {e["resource"]["code"]["coding"][0]["code"] for e in bundle.get("entry", [])}
        assert codes <= {"8310-5"}


def test_refusals_and_errors_are_the_apps(client, anonymous_client, family, spy, issue_token):
    fam, _ = family
    r = anonymous_client.get(f"/fhir/Patient?family={fam}")
    assert r.status_code == 401
    no_patients = {"Authorization": f"Bearer {issue_token('system/Observation.rs')}"}
    assert client.get(f"/fhir/Patient?family={fam}", headers=no_patients).status_code == 403
    assert client.get("/fhir/Patient?birthdate=notadate").status_code == 400
    assert client.get("/fhir/Patient?nosuchparam=1").status_code == 400
    assert client.get("/fhir/NoSuchType?x=1").status_code == 404
    assert client.get(f"/fhir/Patient?family={fam}", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert spy == []


@pytest.mark.parametrize("query", ["family:exact={fam}", "_revinclude=Observation:subject&family={fam}", "_include=Patient:organization&family={fam}",
                                   "_has:Observation:subject:status=final&family={fam}", "organization.name=x&family={fam}"])
def test_other_searches_go_to_the_app(client, family, spy, query):
    fam, _ = family
    r = client.get("/fhir/Patient?" + query.format(fam=fam))
    assert r.status_code == 200
    assert spy == []
    r = client.get(f"/fhir/Patient?family={fam}", headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200 and spy == []


@pytest.mark.parametrize("query", ["Observation?code=http://loinc.org|8867-4&patient=Patient/{first}", "Observation?subject={first}",
                                   "Patient?family={fam}&gender=male&_count=2", "Patient?family={fam}&birthdate=ge1981&_sort=-birthdate"])
def test_learned_shapes_answer_as_the_app(client, family, spy, issue_token, query):
    """Searches of a shape the fast path has learned (search/shapes.py) - the first one
    planned, the next two also checked against the planner, the rest filled in - answer
    exactly as the app, for a system token and for a patient token (compartment criteria)."""
    fam, ids = family
    path = "/fhir/" + query.format(fam=fam, first=ids[0])
    for headers in ({}, {"Authorization": f"Bearer {issue_token('patient/*.rs', patient=ids[0])}"}):
        answers = [_both(client, path, spy, headers)]
        cache = next(iter(fast._caches.values()))
        before = cache.shapes.hits
        answers += [_both(client, path, spy, headers) for _ in range(4)]
        assert cache.shapes.hits >= before + 4, "the shape was not learned"
        assert all(a == answers[0] for a in answers[1:])
