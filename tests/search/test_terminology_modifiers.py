"""Token :in, :not-in, :below, :above answered from the terminology (R4 search.html#modifiers)."""

from __future__ import annotations

import uuid

import pytest

H = {"Content-Type": "application/fhir+json"}
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"


@pytest.fixture(scope="module")
def tagged(app, auth_headers):
    """RelatedPersons with RoleCode relationships and Patients with tagged genders, under a unique tag."""
    from fastapi.testclient import TestClient

    tag = uuid.uuid4().hex[:12]
    made: dict[str, str] = {}
    with TestClient(app, headers=auth_headers) as c:
        for code in ("MTH", "FTH", "NMTH", "FRND", "PRN"):
            rp = {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/x"},
                  "meta": {"tag": [{"system": "urn:test", "code": tag}]},
                  "relationship": [{"coding": [{"system": ROLE, "code": code}]}]}
            r = c.post("/fhir/RelatedPerson", json=rp, headers=H)
            assert r.status_code == 201, r.text
            made[code] = r.json()["id"]
        for g in ("male", "female"):
            p = {"resourceType": "Patient", "gender": g, "meta": {"tag": [{"system": "urn:test", "code": tag}]}}
            made[g] = c.post("/fhir/Patient", json=p, headers=H).json()["id"]
    return tag, made


def _ids(client, res_type, params) -> set[str]:
    r = client.get(f"/fhir/{res_type}", params=params)
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


@pytest.mark.parametrize("param,value,expected", [
    ("relationship:below", f"{ROLE}|PRN", {"MTH", "FTH", "NMTH", "PRN"}),  # PRN and its descendants
    ("relationship:below", f"{ROLE}|MTH", {"MTH", "NMTH"}),  # natural mother is a kind of mother
    ("relationship:above", f"{ROLE}|NMTH", {"MTH", "PRN", "NMTH"}),  # NMTH, MTH above it, PRN above that
    ("relationship:in", "http://terminology.hl7.org/ValueSet/v3-RoleCode", {"MTH", "FTH", "NMTH", "FRND", "PRN"}),
])
def test_hierarchy_and_value_set_modifiers(client, tagged, param, value, expected):
    tag, made = tagged
    got = _ids(client, "RelatedPerson", {"_tag": f"urn:test|{tag}", param: value})
    assert got == {made[c] for c in expected}


def test_in_and_not_in_a_client_value_set(client, tagged):
    tag, made = tagged
    vs = {"resourceType": "ValueSet", "url": f"http://example.org/vs/parents-{tag}", "status": "active",
          "compose": {"include": [{"system": ROLE, "concept": [{"code": "MTH"}, {"code": "FTH"}]}]}}
    vs_id = client.post("/fhir/ValueSet", json=vs, headers=H).json()["id"]
    base = {"_tag": f"urn:test|{tag}"}
    assert _ids(client, "RelatedPerson", {**base, "relationship:in": vs["url"]}) == {made["MTH"], made["FTH"]}
    assert _ids(client, "RelatedPerson", {**base, "relationship:in": f"ValueSet/{vs_id}"}) == {made["MTH"], made["FTH"]}
    assert _ids(client, "RelatedPerson", {**base, "relationship:not-in": vs["url"]}) == {made[c] for c in ("NMTH", "FRND", "PRN")}


def test_in_on_a_code_element(client, tagged):
    tag, made = tagged
    assert _ids(client, "Patient", {"_tag": f"urn:test|{tag}", "gender:in": GENDER_VS}) == {made["male"], made["female"]}
    assert _ids(client, "Patient", {"_tag": f"urn:test|{tag}", "gender:not-in": GENDER_VS}) == set()


@pytest.mark.parametrize("param,value", [
    ("relationship:in", "http://example.org/vs/none"),
    ("relationship:in", "ValueSet/no-such-id"),
    ("relationship:below", "MTH"),  # no system
    ("relationship:below", "http://example.org/unknown|x"),
    ("relationship:below", f"{ROLE}|NOPE"),
    ("relationship:in", "http://hl7.org/fhir/ValueSet/mimetypes"),  # cannot be expanded
])
def test_bad_values_are_400(client, param, value):
    r = client.get("/fhir/RelatedPerson", params={param: value})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == [param]
