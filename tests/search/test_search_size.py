"""A search may have at most `MAX_CRITERIA` criteria and `MAX_INCLUDES` includes (search.size):
each criterion is a subquery the database plans and joins, and a patient token's
`Observation?patient=1&patient=2&...` repeated 2,000 times held a PostgreSQL backend for more
than ten minutes in 4 GB. Beyond the limits: 400 at once, on every route a search takes."""

from __future__ import annotations

import time
import uuid

import pytest

from fhir_server.search.size import MAX_CRITERIA, MAX_INCLUDES


def _query(n: int, name: str = "patient") -> str:
    return "&".join(f"{name}=p{i}" for i in range(n))


@pytest.fixture
def patient(client):
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Size" + uuid.uuid4().hex[:6]}]})
    assert r.status_code == 201
    return r.json()["id"]


def test_criteria_up_to_the_limit_are_answered_and_one_more_is_a_400(client, patient):
    ok = client.get(f"/fhir/Observation?{_query(MAX_CRITERIA - 1, 'code')}&subject=Patient/{patient}")
    assert ok.status_code == 200, ok.text
    over = client.get(f"/fhir/Observation?{_query(MAX_CRITERIA + 1, 'code')}")
    assert over.status_code == 400
    issue = over.json()["issue"][0]
    assert issue["code"] == "too-costly" and f"at most {MAX_CRITERIA}" in issue["diagnostics"]


@pytest.mark.parametrize("path", [
    "/fhir/Observation?{q}",  # the engine
    "/fhir/Observation/_search",  # POST with a form body
    "/fhir/Patient/{pid}/Observation?{q}",  # a compartment search
    "/fhir/AuditEvent?{q}",  # the access log's own search
    "/fhir?_type=Observation&{q}",  # a system search
])
def test_hundreds_of_repeats_are_refused_at_once_on_every_route(client, patient, path):
    url = path.format(q=_query(500), pid=patient)
    started = time.monotonic()
    if url.endswith("_search"):
        r = client.post(url, content=_query(500), headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        r = client.get(url)
    elapsed = time.monotonic() - started
    assert r.status_code == 400, (url[:80], r.status_code, r.text[:300])
    assert r.json()["issue"][0]["code"] == "too-costly"
    assert elapsed < 5  # before any SQL: ten minutes of database time before the limit


def test_lenient_handling_does_not_waive_the_limit(client):
    r = client.get(f"/fhir/Observation?{_query(MAX_CRITERIA + 5, 'code')}", headers={"Prefer": "handling=lenient"})
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "too-costly"


def test_includes_beyond_the_limit_are_a_400(client):
    inc = "&".join(["_include=Observation:subject"] * (MAX_INCLUDES + 1))
    r = client.get(f"/fhir/Observation?{inc}")
    assert r.status_code == 400 and "_include" in r.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Observation?" + "&".join(["_include=Observation:subject"] * MAX_INCLUDES)).status_code == 200
