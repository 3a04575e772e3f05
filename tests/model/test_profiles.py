"""Profiles held on the server: $validate?profile= and profiles required on write."""

from __future__ import annotations

import uuid

import pytest

H = {"Content-Type": "application/fhir+json"}
PNR = "http://electronichealth.se/identifier/personnummer"
TAG = uuid.uuid4().hex[:8]
PATIENT_PROFILE = f"http://example.se/fhir/StructureDefinition/national-patient-{TAG}"
OBS_PROFILE = f"http://example.se/fhir/StructureDefinition/bp-{TAG}"
VS = f"http://example.se/fhir/ValueSet/obs-status-{TAG}"


def _sd(url: str, type_: str, elements: list[dict]) -> dict:
    return {"resourceType": "StructureDefinition", "url": url, "name": "P" + TAG, "status": "active",
            "kind": "resource", "abstract": False, "type": type_, "derivation": "constraint",
            "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{type_}",
            "differential": {"element": [{"id": type_, "path": type_}] + elements}}


NATIONAL_PATIENT = _sd(PATIENT_PROFILE, "Patient", [
    {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1,
     "slicing": {"discriminator": [{"type": "pattern", "path": "system"}], "rules": "closed"}},
    {"id": "Patient.identifier:pnr", "path": "Patient.identifier", "sliceName": "pnr", "min": 1, "max": "1"},
    {"id": "Patient.identifier:pnr.system", "path": "Patient.identifier.system", "min": 1, "patternUri": PNR},
    {"id": "Patient.identifier:pnr.use", "path": "Patient.identifier.use", "fixedCode": "official"},
    {"id": "Patient.name", "path": "Patient.name", "min": 1,
     "constraint": [{"key": "np-1", "severity": "error", "human": "A family name is required",
                     "expression": "family.exists()"}]},
    {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1},
    {"id": "Patient.gender", "path": "Patient.gender", "min": 1},
])
BP = _sd(OBS_PROFILE, "Observation", [
    {"id": "Observation.status", "path": "Observation.status",
     "binding": {"strength": "required", "valueSet": VS}},
    {"id": "Observation.code", "path": "Observation.code",
     "patternCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}},
    {"id": "Observation.value[x]", "path": "Observation.value[x]", "type": [{"code": "Quantity"}]},
])
VALUE_SET = {"resourceType": "ValueSet", "url": VS, "status": "active", "compose": {"include": [
    {"system": "http://hl7.org/fhir/observation-status", "concept": [{"code": "final"}, {"code": "amended"}]}]}}

# inactive: the identity-uniqueness rule must not clash with other tests' Tolvan Tolvansson in the shared database
GOOD_PATIENT = {"resourceType": "Patient", "active": False, "gender": "female", "birthDate": "1912-12-12",
                "identifier": [{"use": "official", "system": PNR, "value": "19121212-1212"}],
                "name": [{"family": "Tolvansson", "given": ["Tolvan"]}]}


@pytest.fixture(scope="module", autouse=True)
def stored_profiles(app, auth_headers):
    from fastapi.testclient import TestClient

    with TestClient(app, headers=auth_headers) as c:
        for r in (NATIONAL_PATIENT, BP, VALUE_SET):
            assert c.post(f"/fhir/{r['resourceType']}", json=r, headers=H).status_code == 201


def _validate(client, resource, profile):
    r = client.post(f"/fhir/{resource['resourceType']}/$validate", params={"profile": profile}, json=resource, headers=H)
    assert r.status_code == 200, r.text
    return [i for i in r.json()["issue"] if i["severity"] == "error"]


def test_conforming_patient(client):
    assert _validate(client, GOOD_PATIENT, PATIENT_PROFILE) == []


@pytest.mark.parametrize("change,expression,words", [
    ({"birthDate": None}, "Patient.birthDate", "at least 1"),
    ({"identifier": None}, "Patient.identifier", "at least 1"),
    ({"identifier": [{"use": "official", "system": "urn:oid:1.2.3", "value": "x"}]}, "Patient.identifier[0]", "fits no slice"),
    ({"identifier": [{"use": "usual", "system": PNR, "value": "19121212-1212"}]}, "Patient.identifier[0].use", "exactly"),
    ({"identifier": [{"use": "official", "system": PNR, "value": "19121212-1212"},
                     {"use": "official", "system": PNR, "value": "19121212-1212"}]}, "Patient.identifier", "at most 1"),
    ({"name": [{"given": ["Tolvan"]}]}, "Patient.name[0]", "np-1"),
])
def test_profile_violations(client, change, expression, words):
    patient = {k: v for k, v in {**GOOD_PATIENT, **change}.items() if v is not None}
    errors = _validate(client, patient, PATIENT_PROFILE)
    hits = [e for e in errors if e.get("expression") == [expression] and words in e["diagnostics"]]
    assert hits, errors
    assert PATIENT_PROFILE in hits[0]["diagnostics"]


def test_binding_pattern_and_type_restriction(client):
    good = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "BP"}]},
            "valueQuantity": {"value": 120}}
    assert _validate(client, good, OBS_PROFILE) == []
    bad = {"resourceType": "Observation", "status": "preliminary",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueString": "high"}
    got = {e["expression"][0] for e in _validate(client, bad, OBS_PROFILE)}
    assert got == {"Observation.status", "Observation.code", "Observation.valueString"}


def test_unknown_profile_asked_is_an_error_claimed_is_information(client):
    errors = _validate(client, GOOD_PATIENT, "http://example.org/none")
    assert errors and "not known" in errors[0]["diagnostics"]
    claimed = {**GOOD_PATIENT, "meta": {"profile": ["http://example.org/none"]}}
    r = client.post("/fhir/Patient/$validate", json=claimed, headers=H).json()
    assert any(i["severity"] == "information" and "not known" in i["diagnostics"] for i in r["issue"])


def test_claimed_profile_is_checked(client):
    claimed = {**GOOD_PATIENT, "meta": {"profile": [PATIENT_PROFILE]}}
    claimed.pop("birthDate")
    r = client.post("/fhir/Patient/$validate", json=claimed, headers=H).json()
    assert any(i["severity"] == "error" and i.get("expression") == ["Patient.birthDate"] for i in r["issue"])


def test_required_profile_on_write(client):
    from fhir_server.model.required_profiles import make_rule
    from fhir_server.rest import rules

    previous = rules._rules.get("required_profiles")
    rules.register(make_rule({"Patient": [PATIENT_PROFILE]}), "required_profiles")
    try:
        r = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=H)
        assert r.status_code == 422
        expressions = {e for i in r.json()["issue"] for e in i.get("expression", [])}
        assert {"Patient.identifier", "Patient.birthDate", "Patient.name"} <= expressions
        ok = GOOD_PATIENT
        assert client.post("/fhir/Patient", json=ok, headers=H).status_code == 201
        assert client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final",
                                                      "code": {"text": "x"}}, headers=H).status_code == 201
        rules.register(make_rule({"Patient": ["http://example.org/not-loaded"]}), "required_profiles")
        assert client.post("/fhir/Patient", json=ok, headers=H).status_code == 503
    finally:
        if previous is not None:
            rules.register(previous, "required_profiles")


def test_required_profiles_setting_parses():
    from fhir_server.model.required_profiles import parse

    assert parse("Patient=http://a, Observation=http://b,Patient=http://c") == {
        "Patient": ["http://a", "http://c"], "Observation": ["http://b"]}
    with pytest.raises(ValueError):
        parse("Patient")
