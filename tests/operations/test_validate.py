"""$validate runs every check a write runs, collects every problem, and never stores anything."""

from __future__ import annotations

import pytest

H = {"Content-Type": "application/fhir+json"}
PNR_SYSTEM = "http://electronichealth.se/identifier/personnummer"


def _issues(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"]


def _errors(r):
    return [i for i in _issues(r) if i["severity"] in ("error", "fatal")]


def test_valid_resource_gives_an_informational_outcome(client):
    r = client.post("/fhir/Patient/$validate", json={"resourceType": "Patient", "gender": "female",
                                                      "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}},
                    headers=H)
    issues = _issues(r)
    assert not _errors(r)
    assert issues[0]["severity"] == "information"


def test_every_problem_is_listed_with_its_expression(client):
    bad = {"resourceType": "Patient", "gender": "robot", "birthDate": "not-a-date",
           "contact": [{"gender": "robot"}], "identifier": [{"use": "bogus", "value": "1"}]}
    expressions = {e for i in _errors(client.post("/fhir/Patient/$validate", json=bad, headers=H)) for e in i.get("expression", [])}
    assert {"Patient.gender", "Patient.birthDate", "Patient.contact[0].gender", "Patient.identifier[0].use"} <= expressions
    assert client.get("/fhir/Patient?gender=robot").json().get("total", 0) == 0


def test_parameters_body_and_raw_body_are_both_accepted(client):
    bad = {"resourceType": "Task", "status": "ready", "intent": "order", "priority": "whenever"}
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad},
                                                          {"name": "mode", "valueCode": "create"}]}
    for body in (bad, params):
        errors = _errors(client.post("/fhir/Task/$validate", json=body, headers=H))
        assert [i["expression"] for i in errors] == [["Task.priority"]]


def test_write_rules_are_run_and_collected(client):
    """National identifiers are a write rule: an invalid personnummer is reported, not raised."""
    bad = {"resourceType": "Patient", "identifier": [{"system": PNR_SYSTEM, "value": "19121212-1213"}],
           "gender": "female"}
    errors = _errors(client.post("/fhir/Patient/$validate", json=bad, headers=H))
    assert ["Patient.identifier[0].value"] in [i["expression"] for i in errors]


def test_rules_registered_later_show_up(client):
    from fhir_server.errors import FhirError
    from fhir_server.rest import rules

    def no_tuesday_tasks(conn, res_type, res_id, resource):
        if res_type == "Task" and resource.get("description") == "tuesday":
            raise FhirError.of(422, "business-rule", "No tasks on Tuesday", "Task.description")
        return []

    rules.register(no_tuesday_tasks, "test-no-tuesday")
    try:
        t = {"resourceType": "Task", "status": "ready", "intent": "order", "description": "tuesday"}
        errors = _errors(client.post("/fhir/Task/$validate", json=t, headers=H))
        assert [i["expression"] for i in errors] == [["Task.description"]]
    finally:
        rules._rules.pop("test-no-tuesday", None)


def test_invariants_are_evaluated(client):
    # pat-1: a contact needs details; per-1: start <= end
    bad = {"resourceType": "Patient", "contact": [{"gender": "male"}],
           "name": [{"family": "X", "period": {"start": "2020-02-01", "end": "2020-01-01"}}]}
    errors = _errors(client.post("/fhir/Patient/$validate", json=bad, headers=H))
    by_key = {i["diagnostics"].split(":")[0]: i["expression"] for i in errors}
    assert by_key["pat-1"] == ["Patient.contact[0]"]
    assert by_key["per-1"] == ["Patient.name[0].period"]


def test_invariant_that_cannot_be_evaluated_is_information(monkeypatch):
    from fhir_server.model import invariants

    table = dict(invariants.constraints())
    table["Patient"] = table["Patient"] + [["zz-1", "error", "uses a function fhirpathpy lacks", "name.frobnicate()"]]
    monkeypatch.setattr(invariants, "constraints", lambda: table)
    issues = invariants.check_invariants({"resourceType": "Patient", "name": [{"family": "x"}]})
    zz = [i for i in issues if "zz-1" in i.diagnostics]
    assert len(zz) == 1 and zz[0].severity == "information" and "not evaluated" in zz[0].diagnostics


def test_instance_level_validates_the_stored_resource_and_update_mode(client):
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=H)
    pid = r.json()["id"]
    assert not _errors(client.get(f"/fhir/Patient/{pid}/$validate"))
    wrong = {"resourceType": "Patient", "id": "other", "gender": "male"}
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": wrong},
                                                          {"name": "mode", "valueCode": "update"}]}
    errors = _errors(client.post(f"/fhir/Patient/{pid}/$validate", json=params, headers=H))
    assert [i["expression"] for i in errors] == [["Patient.id"]]


def test_delete_mode(client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=H).json()["id"]
    client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                           "subject": {"reference": f"Patient/{pid}"}}, headers=H)
    issues = _issues(client.post(f"/fhir/Patient/{pid}/$validate?mode=delete", headers=H))
    assert any(i["severity"] == "warning" and "refer" in i["diagnostics"] for i in issues)
    assert client.post("/fhir/Patient/no-such/$validate?mode=delete", headers=H).status_code == 404
    assert client.post("/fhir/Patient/$validate?mode=delete", headers=H).status_code == 400


@pytest.mark.parametrize("body,status", [
    (b"", 400),
    (b'{"resourceType": "Observation"}', 400),  # wrong type for the endpoint
    (b"[1, 2]", 400),
])
def test_bad_calls_are_400(client, body, status):
    r = client.post("/fhir/Patient/$validate", content=body, headers=H)
    assert r.status_code == status
    assert r.json()["resourceType"] == "OperationOutcome"


def test_bad_mode_is_400(client):
    r = client.post("/fhir/Patient/$validate?mode=sideways", json={"resourceType": "Patient"}, headers=H)
    assert r.status_code == 400


def test_fhirpy_is_valid(live_server, auth_headers):
    from fhirpy import SyncFHIRClient

    fc = SyncFHIRClient(live_server, extra_headers=auth_headers)
    assert fc.resource("Patient", gender="female").is_valid() is True
    assert fc.resource("Patient", gender="robot").is_valid() is False
