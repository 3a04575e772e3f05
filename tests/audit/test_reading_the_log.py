"""Who may read the access log, what it refuses, and how it is searched."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from .conftest import rid


def _patient(client) -> str:
    return client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]


def _bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def test_patient_reads_their_own_log_and_not_another(app, client, issue_token):
    me, other = _patient(client), _patient(client)
    client.get(f"/fhir/Patient/{me}")  # staff looked at my record
    client.get(f"/fhir/Patient/{other}")
    app.state.audit_writer.flush()
    with TestClient(app, base_url="http://testserver", headers=_bearer(issue_token("patient/*.rs", patient=me))) as mine:
        bundle = mine.get("/fhir/AuditEvent", params={"_count": 200}).json()
        refs = {x["what"]["reference"] for e in bundle.get("entry", []) for x in e["resource"].get("entity", [])
                if "reference" in x.get("what", {})}
        assert f"Patient/{me}" in refs and f"Patient/{other}" not in refs
        who = {a.get("altId") for e in bundle["entry"] for a in e["resource"]["agent"]}
        assert "test" in who  # the staff member who read my record
        # an event about the other patient answers 404, as if it did not exist
        theirs = client.get("/fhir/AuditEvent", params={"patient": f"Patient/{other}"}).json()["entry"][0]["resource"]["id"]
        assert mine.get(f"/fhir/AuditEvent/{theirs}").status_code == 404
        assert mine.get("/fhir/AuditEvent", params={"patient": other}).json().get("total") == 0


def test_staff_need_an_audit_event_scope(app, client, issue_token):
    staff = issue_token("user/Observation.rs user/Patient.rs", fhir_user="Practitioner/p-1")
    with TestClient(app, base_url="http://testserver", headers=_bearer(staff)) as c:
        assert c.get("/fhir/AuditEvent").status_code == 403
    auditor = issue_token("user/AuditEvent.rs", fhir_user="Practitioner/p-2")
    with TestClient(app, base_url="http://testserver", headers=_bearer(auditor)) as c:
        assert c.get("/fhir/AuditEvent").status_code == 200


def test_audit_events_cannot_be_changed_or_deleted(client):
    pid = _patient(client)
    client.get(f"/fhir/Patient/{pid}")
    client.app.state.audit_writer.flush()
    e = client.get("/fhir/AuditEvent", params={"patient": pid}).json()["entry"][0]["resource"]
    for method, body, ctype in (("PUT", e, "application/fhir+json"), ("PATCH", [{"op": "remove", "path": "/agent"}], "application/json-patch+json"), ("DELETE", None, None)):
        r = client.request(method, f"/fhir/AuditEvent/{e['id']}", json=body, headers={"Content-Type": ctype} if ctype else {})
        assert r.status_code == 405, (method, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    r = client.delete("/fhir/AuditEvent", params={"_id": e["id"]})
    assert r.status_code == 405
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"AuditEvent/{e['id']}"}}]}
    assert client.post("/fhir", json=bundle).status_code == 405
    assert client.get(f"/fhir/AuditEvent/{e['id']}").json()["agent"] == e["agent"]  # unchanged


def test_only_audit_sources_with_a_system_scope_create_events(app, client, issue_token):
    pid = _patient(client)
    event = {"resourceType": "AuditEvent", "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
             "recorded": "2026-01-01T10:00:00Z", "outcome": "0",
             "agent": [{"requestor": True, "who": {"reference": f"Patient/{pid}"}}],
             "source": {"observer": {"display": "another system"}},
             "entity": [{"what": {"reference": f"Patient/{pid}"}}]}
    assert client.post("/fhir/AuditEvent", json=event).status_code == 201  # system/*.* : an audit source
    with TestClient(app, base_url="http://testserver", headers=_bearer(issue_token("patient/*.cruds", patient=pid))) as c:
        r = c.post("/fhir/AuditEvent", json=event)
        assert r.status_code == 403, r.text


def test_search_parameters_find_events(client):
    pid = _patient(client)
    h = rid()
    client.get(f"/fhir/Patient/{pid}", headers=h)
    client.app.state.audit_writer.flush()
    base = {"patient": f"Patient/{pid}", "_count": 100}
    for extra in ({}, {"agent:identifier": "test"}, {"date": "ge2020-01-01"}, {"entity": f"Patient/{pid}"},
                  {"type": "http://terminology.hl7.org/CodeSystem/audit-event-type|rest"}, {"outcome": "0"},
                  {"subtype": "read"}, {"action": "R"}):
        r = client.get("/fhir/AuditEvent", params={**base, **extra})
        assert r.status_code == 200, (extra, r.text)
        assert r.json().get("total", 0) >= 1, extra
    assert client.get("/fhir/AuditEvent", params={**base, "outcome": "8"}).json()["total"] == 0
    assert client.get("/fhir/AuditEvent", params={**base, "date": "lt2020-01-01"}).json()["total"] == 0


def test_reading_the_log_is_audited_once(app, client):
    from sqlalchemy import func, select

    from fhir_server.storage.schema import audit_log

    def count():
        app.state.audit_writer.flush()
        with app.state.db.read() as conn:
            return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()

    before = count()
    client.get("/fhir/AuditEvent", params={"_count": 50})
    assert count() == before + 1
    assert count() == before + 1  # writing the log left nothing more to write
