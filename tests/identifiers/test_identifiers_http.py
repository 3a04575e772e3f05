"""National identifiers through HTTP: rejected when invalid, one active patient
each, found by search in any written form and under any system alias."""

from __future__ import annotations

import random

import pytest

PNR = "http://electronichealth.se/identifier/personnummer"
PNR_OID = "urn:oid:1.2.752.129.2.1.3.1"
SAMORD = "http://electronichealth.se/identifier/samordningsnummer"
PESEL = "urn:oid:2.16.840.1.113883.3.4424.1.1.616"
CPR = "urn:oid:1.2.208.176.1.2"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
FNR_URI = "http://hl7.no/fhir/NamingSystem/FNR"
HETU = "urn:oid:1.2.246.21"


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(digits):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def fresh_personnummer() -> tuple[str, str]:
    """A valid personnummer no other test uses: (12-digit form, YYYYMMDD)."""
    n = random.Random().randrange(10**9)
    year, month, day = 1930 + n % 70, 1 + (n // 70) % 12, 1 + (n // 840) % 28
    serial = f"{(n // 23520) % 1000:03d}"
    ten = f"{year % 100:02d}{month:02d}{day:02d}{serial}"
    return f"{year}{month:02d}{day:02d}{serial}{_luhn_digit(ten)}", f"{year}-{month:02d}-{day:02d}"


def _patient(system: str, value: str, **extra) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], **extra}


def _ids(client, query: str) -> list[str]:
    r = client.get(f"/fhir/Patient?{query}")
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def test_invalid_checksum_is_422_with_expression(client):
    r = client.post("/fhir/Patient", json=_patient(PNR, "19121212-1213"))
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Patient.identifier[0].value"]
    assert "personnummer" in issue["diagnostics"].lower() and "check" in issue["diagnostics"].lower()


def test_impossible_date_is_422(client):
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}, {"system": PESEL, "value": "44053401458"}]})
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Patient.identifier[1].value"]


def test_alias_and_written_forms_find_the_same_patient(client):
    twelve, born = fresh_personnummer()
    dashed, short = f"{twelve[:8]}-{twelve[8:]}", f"{twelve[2:8]}-{twelve[8:]}"
    r = client.post("/fhir/Patient", json=_patient(PNR, dashed, birthDate=born))
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    for q in (
        f"identifier={PNR}|{twelve}",
        f"identifier={PNR}|{dashed}",
        f"identifier={PNR}|{short}",
        f"identifier={PNR_OID}|{twelve}",
        f"identifier={PNR_OID}|{short}",
        f"identifier={twelve}",
        f"identifier={dashed}",
    ):
        assert _ids(client, q) == [rid], q


def test_oid_alias_on_write_and_uri_on_search(client):
    rid = client.post("/fhir/Patient", json=_patient(FNR_URI, "01010750160")).json()["id"]
    assert _ids(client, f"identifier={FNR}|01010750160") == [rid]
    stored = client.get(f"/fhir/Patient/{rid}").json()
    assert stored["identifier"][0]["system"] == FNR_URI  # stored as sent


def test_of_type_search(client):
    twelve, _ = fresh_personnummer()
    rid = client.post("/fhir/Patient", json=_patient(PNR, twelve)).json()["id"]
    q = f"identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|NNSWE|{twelve}"
    assert _ids(client, q) == [rid]


def test_duplicate_active_patient_is_409_naming_existing(client):
    first = client.post("/fhir/Patient", json=_patient(CPR, "0707614285")).json()["id"]
    r = client.post("/fhir/Patient", json=_patient(CPR, "070761-4285"))
    assert r.status_code == 409
    assert f"Patient/{first}" in r.json()["issue"][0]["diagnostics"]
    # an inactive record does not block, and updating the first one itself is fine
    assert client.post("/fhir/Patient", json=_patient(CPR, "0707614285", active=False)).status_code == 201
    assert client.put(f"/fhir/Patient/{first}", json={**_patient(CPR, "0707614285"), "id": first, "gender": "male"}).status_code == 200


def test_conditional_create_in_another_written_form_finds_existing(client):
    rid = client.post("/fhir/Patient", json=_patient(HETU, "131052-308T")).json()["id"]
    r = client.post(
        "/fhir/Patient",
        json=_patient(HETU, "131052-308t"),
        headers={"If-None-Exist": f"identifier={HETU}|131052-308t"},
    )
    assert r.status_code == 200 and r.json()["id"] == rid


def test_birth_date_contradiction_is_a_warning(client):
    r = client.post(
        "/fhir/Patient",
        json=_patient(SAMORD, "19701063-2391", birthDate="1970-10-04"),
        headers={"Prefer": "return=OperationOutcome"},
    )
    assert r.status_code == 201
    issues = r.json()["issue"]
    warnings = [i for i in issues if i["severity"] == "warning"]
    assert warnings and warnings[0]["expression"] == ["Patient.birthDate"]
    assert "1970-10-03" in warnings[0]["diagnostics"]


def test_naming_systems_are_served_and_searchable(client):
    bundle = client.get("/fhir/NamingSystem?value=1.2.752.129.2.1.3.1").json()
    names = [e["resource"]["name"] for e in bundle.get("entry", [])]
    assert len(names) == 1
    assert client.get("/fhir/NamingSystem?kind=identifier&_summary=count").json()["total"] >= 9


@pytest.mark.parametrize("system,value", [(PNR, "19121212-1212"), (PESEL, "44051401458"), (CPR, "0101011234")])
def test_valid_numbers_are_accepted(client, system, value):
    r = client.post("/fhir/Patient", json=_patient(system, value, active=False))
    assert r.status_code == 201, r.text
