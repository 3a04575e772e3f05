""""It's your turn" end to end: staff take a care-seeking visit (Task to in-progress over
HTTP), the notifier's worker sends the SMS to a real HTTP gateway and the e-mail to a real
SMTP server, in the patient's language, once per visit."""

from __future__ import annotations

import uuid

from fhir_server.jobs.runner import run_pending
from fhir_server.workflows.triage.start import visit_task_id

from tests.workflows.booking.helpers import make_patient

SYMPTOMS = "http://fhir-server.example/Questionnaire/care-seeking-symptoms"
NO = {"system": "http://loinc.org", "code": "LA32-8"}


def _visit(client, pid: str) -> str:
    qr = {"resourceType": "QuestionnaireResponse", "questionnaire": SYMPTOMS, "status": "completed",
          "subject": {"reference": f"Patient/{pid}"}, "authored": "2024-06-03T08:00:00Z", "item": [
              {"linkId": "complaint", "answer": [{"valueString": "earache"}]},
              {"linkId": "chest-pain", "answer": [{"valueCoding": NO}]},
              {"linkId": "fever", "answer": [{"valueCoding": NO}]}]}
    r = client.post("/fhir/QuestionnaireResponse", json=qr)
    assert r.status_code == 201, r.text
    return visit_task_id(r.json()["id"])


def _set_status(client, tid: str, status: str, **more) -> None:
    task = client.get(f"/fhir/Task/{tid}").json()
    r = client.put(f"/fhir/Task/{tid}", json={**task, "status": status, **more})
    assert r.status_code == 200, r.text


def test_taking_the_visit_sends_your_turn_once(client, app, notify_settings, smtp_server, sms_gateway):
    phone = f"+4670{uuid.uuid4().int % 10**7:07d}"
    mail = f"p{uuid.uuid4().hex[:10]}@example.org"
    patient = make_patient(client, email=mail, phone=phone, language="sv-SE")
    tid = _visit(client, patient["id"])
    _set_status(client, tid, "accepted")
    run_pending(app.state.db, notify_settings, kinds=["notify.send"])
    assert sms_gateway.to(phone) == [] and smtp_server.to(mail) == []  # accepted is not yet her turn
    _set_status(client, tid, "in-progress")
    run_pending(app.state.db, notify_settings, kinds=["notify.send"])
    (sms,) = sms_gateway.to(phone)
    assert sms["body"]["message"] == "Nu är det din tur."
    (msg,) = smtp_server.to(mail)
    assert msg["Subject"] == "Nu är det din tur"
    # staff keep working on it, put it back and take it again: no second message
    _set_status(client, tid, "in-progress", description="talking")
    _set_status(client, tid, "accepted")
    _set_status(client, tid, "in-progress")
    run_pending(app.state.db, notify_settings, kinds=["notify.send"])
    assert len(sms_gateway.to(phone)) == 1 and len(smtp_server.to(mail)) == 1
    sent = client.get("/fhir/Communication", params={"patient": f"Patient/{patient['id']}"}).json()["entry"]
    assert {e["resource"]["status"] for e in sent} == {"completed"}
    assert {e["resource"]["about"][0]["reference"] for e in sent} == {f"Task/{tid}"}
