"""Observation/$lastn: the newest `max` Observations per subject and equivalent code."""

from __future__ import annotations

import uuid

LOINC = "http://loinc.org"
VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


def _obs(client, pid: str, codings: list[tuple[str, str]] | None, when: str, value: float, text: str | None = None,
         category: str = "vital-signs") -> str:
    code: dict = {}
    if codings:
        code["coding"] = [{"system": s, "code": c} for s, c in codings]
    if text:
        code["text"] = text
    body = {"resourceType": "Observation", "status": "final", "code": code,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    r = client.post("/fhir/Observation", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _setup(client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    ids = {
        "sys1": _obs(client, pid, [(LOINC, "8480-6")], "2024-01-01", 120),
        "sys2": _obs(client, pid, [(LOINC, "8480-6")], "2024-03-01", 130),
        "sys3": _obs(client, pid, [(LOINC, "8480-6")], "2024-02-01", 125),
        # a translation joins the 8480-6 group with a local code (transitive equivalence)
        "sys_local": _obs(client, pid, [("urn:local", "SYS"), (LOINC, "8480-6")], "2023-12-01", 118),
        "local_only": _obs(client, pid, [("urn:local", "SYS")], "2024-04-01", 140),
        "dia1": _obs(client, pid, [(LOINC, "8462-4")], "2024-01-01", 80),
        "dia2": _obs(client, pid, [(LOINC, "8462-4")], "2024-02-15", 85),
        "text1": _obs(client, pid, None, "2024-01-05", 1, text="Pain score"),
        "lab": _obs(client, pid, [(LOINC, "2345-7")], "2024-05-01", 5, category="laboratory"),
    }
    return pid, ids


def _ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", [])]


def test_lastn_default_max_one_per_code(client):
    pid, ids = _setup(client)
    got = _ids(client.get(f"/fhir/Observation/$lastn?patient={pid}&category={VITALS}"))
    # groups ordered by their newest: local/8480-6 group (local_only 2024-04), diastolic (02-15), text (01-05)
    assert got == [ids["local_only"], ids["dia2"], ids["text1"]]


def test_lastn_max_and_code_filter(client):
    pid, ids = _setup(client)
    got = _ids(client.get(f"/fhir/Observation/$lastn?subject=Patient/{pid}&code={LOINC}|8462-4&max=5"))
    assert got == [ids["dia2"], ids["dia1"]]
    got = _ids(client.get(f"/fhir/Observation/$lastn?patient={pid}&category={VITALS}&max=3"))
    assert got[:3] == [ids["local_only"], ids["sys2"], ids["sys3"]]
    assert ids["lab"] not in got


def test_lastn_post_parameters(client):
    pid, ids = _setup(client)
    body = {"resourceType": "Parameters", "parameter": [{"name": "max", "valueInteger": 2},
                                                        {"name": "patient", "valueReference": {"reference": f"Patient/{pid}"}},
                                                        {"name": "category", "valueString": "laboratory"}]}
    assert _ids(client.post("/fhir/Observation/$lastn", json=body)) == [ids["lab"]]


def test_lastn_separates_subjects(client):
    a = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    b = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    oa = _obs(client, a, [(LOINC, "8310-5")], "2024-01-01", 37)
    ob = _obs(client, b, [(LOINC, "8310-5")], "2024-02-01", 38)
    got = _ids(client.get(f"/fhir/Observation/$lastn?patient={a},{b}&code={LOINC}|8310-5"))
    assert got == [ob, oa]


def test_lastn_bad_requests(client):
    mark = uuid.uuid4().hex[:6]
    assert client.get(f"/fhir/Observation/$lastn?category={VITALS}").status_code == 400
    assert client.get(f"/fhir/Observation/$lastn?patient={mark}").status_code == 400
    r = client.get(f"/fhir/Observation/$lastn?patient={mark}&category=x&max=0")
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["max"]
    assert client.get(f"/fhir/Observation/$lastn?patient={mark}&category=x&max=abc").status_code == 400
    assert client.get(f"/fhir/Patient/$lastn?patient={mark}&category=x").status_code == 400
    assert _ids(client.get(f"/fhir/Observation/$lastn?patient={mark}&category=x")) == []
