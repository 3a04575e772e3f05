"""Chat between a patient and staff about a care-seeking visit, through a real
client (fhirpy) against the live server: Communications partOf the Task,
replies inResponseTo, the portal hearing of new messages by long poll."""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import parse_qs, urlparse

from fhir_server.workflows.triage.start import visit_task_id

SYMPTOMS = "http://fhir-server.example/Questionnaire/care-seeking-symptoms"
NO = {"system": "http://loinc.org", "code": "LA32-8"}


def _cursor(bundle) -> str:
    return parse_qs(urlparse(bundle["link"][0]["url"]).query)["_cursor"][0]


def test_chat_through_fhirpy_with_long_poll(live_server, auth_headers):
    from fhirpy import SyncFHIRClient

    portal = SyncFHIRClient(live_server, extra_headers=auth_headers)
    staff = SyncFHIRClient(live_server, extra_headers=auth_headers)
    patient = f"Patient/{uuid.uuid4().hex[:8]}"
    qr = portal.resource("QuestionnaireResponse", questionnaire=SYMPTOMS, status="completed", subject={"reference": patient},
                         authored="2024-06-03T08:00:00Z", item=[
                             {"linkId": "complaint", "answer": [{"valueString": "sore throat"}]},
                             {"linkId": "chest-pain", "answer": [{"valueCoding": NO}]},
                             {"linkId": "fever", "answer": [{"valueCoding": NO}]}])
    qr.save()
    task_id = visit_task_id(qr.id)
    task = staff.reference("Task", task_id).to_resource()
    assert task["status"] == "requested"

    # the portal has read the (empty) chat and now waits for news
    first = portal.execute(f"Task/{task_id}/$chat-poll", method="get")
    assert first.get("entry", []) == []
    cursor = _cursor(first)
    heard: list[dict] = []
    waited: list[float] = []

    def long_poll():
        t0 = time.monotonic()
        heard.append(portal.execute(f"Task/{task_id}/$chat-poll", method="get", params={"_cursor": cursor, "_wait": "15"}))
        waited.append(time.monotonic() - t0)

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # nothing to say yet: the poll is held open
    hello = staff.resource("Communication", status="completed", partOf=[{"reference": f"Task/{task_id}"}],
                           subject={"reference": patient}, recipient=[{"reference": patient}],
                           sender={"reference": "Practitioner/nurse-1"}, sent="2024-06-03T08:05:00Z",
                           payload=[{"contentString": "Hello, how long have you had the sore throat?"}])
    hello.save()
    waiter.join(timeout=15)
    assert not waiter.is_alive()
    news = heard[0]
    assert [e["resource"]["id"] for e in news["entry"]] == [hello.id]
    assert waited[0] < 10  # answered when the message came, not at the timeout

    reply = portal.resource("Communication", status="completed", basedOn=[{"reference": f"Task/{task_id}"}],
                            inResponseTo=[{"reference": f"Communication/{hello.id}"}], subject={"reference": patient},
                            sender={"reference": patient}, recipient=[{"reference": "Practitioner/nurse-1"}],
                            sent="2024-06-03T08:06:00Z", payload=[{"contentString": "Three days."}])
    reply.save()
    # a message about another visit does not show up in this chat
    staff.resource("Communication", status="completed", partOf=[{"reference": "Task/other-visit"}],
                   payload=[{"contentString": "unrelated"}]).save()
    later = portal.execute(f"Task/{task_id}/$chat-poll", method="get", params={"_cursor": _cursor(news)})
    assert [e["resource"]["id"] for e in later["entry"]] == [reply.id]
    assert later["entry"][0]["resource"]["inResponseTo"] == [{"reference": f"Communication/{hello.id}"}]
    # nothing new: an empty answer with the same cursor, after the wait
    again = portal.execute(f"Task/{task_id}/$chat-poll", method="get", params={"_cursor": _cursor(later), "_wait": "0.3"})
    assert again.get("entry", []) == [] and _cursor(again) == _cursor(later)
    # the whole thread, by ordinary search
    thread = staff.resources("Communication").search(part_of=f"Task/{task_id}").fetch_all()
    assert [c.id for c in thread] == [hello.id]
    replies = staff.resources("Communication").search(based_on=f"Task/{task_id}").fetch_all()
    assert [c["inResponseTo"][0]["reference"] for c in replies] == [f"Communication/{hello.id}"]


def test_chat_poll_bad_parameters(client):
    assert client.get("/fhir/Task/nope/$chat-poll").status_code == 404
    r = client.post("/fhir/Task", json={"resourceType": "Task", "status": "requested", "intent": "order"})
    tid = r.json()["id"]
    assert client.get(f"/fhir/Task/{tid}/$chat-poll", params={"_wait": "99"}).status_code == 400
    assert client.get(f"/fhir/Task/{tid}/$chat-poll", params={"_cursor": "%%"}).status_code == 400
    assert client.get(f"/fhir/Task/{tid}/$chat-poll", params={"since": "1"}).status_code == 400
