"""Required bindings refuse the write (nothing stored); soft bindings warn with Prefer: return=OperationOutcome."""

from __future__ import annotations

import pytest

H = {"Content-Type": "application/fhir+json"}


@pytest.mark.parametrize("resource,path", [
    ({"resourceType": "Patient", "gender": "robot"}, "Patient.gender"),
    ({"resourceType": "Task", "status": "ready", "intent": "order", "priority": "whenever"}, "Task.priority"),
])
def test_create_with_a_code_outside_a_required_binding_is_refused(client, resource, path):
    before = client.get(f"/fhir/{resource['resourceType']}?_summary=count").json()["total"]
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=H)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["code"] == "code-invalid" and issue["expression"] == [path]
    assert client.get(f"/fhir/{resource['resourceType']}?_summary=count").json()["total"] == before


def test_update_and_transaction_are_checked_too(client):
    r = client.put("/fhir/Patient/bind-1", json={"resourceType": "Patient", "id": "bind-1", "gender": "robot"}, headers=H)
    assert r.status_code == 422
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Appointment", "status": "nonsense", "participant": [{"status": "accepted"}]},
         "request": {"method": "POST", "url": "Appointment"}}]}
    r = client.post("/fhir", json=bundle, headers=H)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]


def test_extensible_binding_warns_with_prefer_operation_outcome(client):
    patient = {"resourceType": "Patient", "maritalStatus": {"coding": [{"system": "http://example.org", "code": "y"}]}}
    r = client.post("/fhir/Patient", json=patient, headers={**H, "Prefer": "return=OperationOutcome"})
    assert r.status_code == 201
    warnings = [i for i in r.json()["issue"] if i["severity"] == "warning"]
    assert warnings and warnings[0]["expression"] == ["Patient.maritalStatus"]
    assert "http://hl7.org/fhir/ValueSet/marital-status" in warnings[0]["diagnostics"]


def test_a_structural_error_beside_a_binding_error_is_a_400(client):
    """422 only when the resource is well-formed and just holds codes outside required bindings."""
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "robot", "active": "yes"}, headers=H)
    assert r.status_code == 400
    assert {i["code"] for i in r.json()["issue"]} >= {"code-invalid"}
