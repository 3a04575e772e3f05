"""Consent writes are checked (actor for proxy provisions, R4 scope and category) and
completed (a default period end from the policy template)."""

from __future__ import annotations

from datetime import date

import pytest

from fhir_server.security.proxy_policy import add_years

from .family import new_id, patient, proxy_provision

SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}
CATEGORY = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]


def body(pid: str, provision: dict, scope=SCOPE, category=CATEGORY) -> dict:
    out = {"resourceType": "Consent", "status": "active", "patient": {"reference": f"Patient/{pid}"}, "provision": provision}
    if scope is not None:
        out["scope"] = scope
    if category is not None:
        out["category"] = category
    return out


@pytest.fixture
def teen(client):
    return patient(client, "DK", date(2009, 9, 9))[0]


def test_default_end_one_year_after_start(client, teen):
    r = client.post("/fhir/Consent", json=body(teen, proxy_provision("Patient/x", start="2026-03-01")))
    assert r.status_code == 201, r.text
    assert r.json()["provision"]["period"] == {"start": "2026-03-01", "end": "2027-03-01"}


def test_default_start_is_today(client, teen):
    r = client.post("/fhir/Consent", json=body(teen, proxy_provision("Patient/x")))
    assert r.status_code == 201, r.text
    period = r.json()["provision"]["period"]
    start = date.fromisoformat(period["start"])
    assert period["end"] == add_years(start, 1).isoformat()


def test_client_end_is_kept(client, teen):
    r = client.post("/fhir/Consent", json=body(teen, proxy_provision("Patient/x", start="2026-03-01", end="2026-06-01")))
    assert r.json()["provision"]["period"]["end"] == "2026-06-01"


@pytest.mark.parametrize("provision,expression", [
    ({"type": "permit", "data": [{"meaning": "related", "reference": {"reference": "Claim/1"}}]}, "Consent.provision.actor"),
    ({"type": "deny", "data": [{"meaning": "related", "reference": {"reference": "EpisodeOfCare/1"}}]}, "Consent.provision.actor"),
    ({"type": "deny", "provision": [{"type": "permit", "data": [{"meaning": "related", "reference": {"reference": "Claim/1"}}]}]},
     "Consent.provision.provision[0].actor"),
])
def test_proxy_provision_needs_an_actor(client, teen, provision, expression):
    r = client.post("/fhir/Consent", json=body(teen, provision))
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "required" and issue["expression"] == [expression]


def test_nested_provision_inherits_the_actor(client, teen):
    p = proxy_provision("Patient/x")
    p["provision"] = [{"type": "deny", "data": [{"meaning": "related", "reference": {"reference": "Claim/9"}}]}]
    assert client.post("/fhir/Consent", json=body(teen, p)).status_code == 201


@pytest.mark.parametrize("scope,category,expression", [
    ({"coding": [{"system": "http://example.org/scope", "code": "whatever"}]}, CATEGORY, "Consent.scope"),
    (SCOPE, [{"coding": [{"system": "http://example.org/cat", "code": "x"}]}], "Consent.category"),
    (SCOPE, [{"text": "proxy"}], "Consent.category"),
])
def test_scope_and_category_from_the_r4_value_sets(client, teen, scope, category, expression):
    r = client.post("/fhir/Consent", json=body(teen, proxy_provision("Patient/x"), scope, category))
    assert r.status_code == 422, r.text
    assert expression in [e for i in r.json()["issue"] for e in i.get("expression") or []]


def test_rejected_write_leaves_nothing(client, teen):
    cid = new_id("consent")
    r = client.put(f"/fhir/Consent/{cid}", json={**body(teen, {"type": "permit", "data": [{"meaning": "related", "reference": {"reference": "Claim/1"}}]}), "id": cid})
    assert r.status_code == 422
    assert client.get(f"/fhir/Consent/{cid}").status_code == 404


def test_provisions_for_everyone_need_no_actor(client, teen):
    """An opt-out or an app's permit (R4 consent-example-smartonfhir) concerns no particular person."""
    assert client.post("/fhir/Consent", json=body(teen, {"type": "deny"})).status_code == 201
    app_permit = {"provision": [{"type": "permit", "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
                                 "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "MedicationRequest"}]}]}
    assert client.post("/fhir/Consent", json=body(teen, app_permit)).status_code == 201
