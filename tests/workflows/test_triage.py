"""The triage queue: visits started by symptom questionnaires, order by
request-priority rank then authoredOn, a patient's place, opening hours,
'it's your turn' on in-progress."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from fhir_server.operations import queue_position
from fhir_server.workflows.triage import turn
from fhir_server.workflows.triage.start import visit_task_id

SYMPTOMS = "http://fhir-server.example/Questionnaire/care-seeking-symptoms"
YES = {"system": "http://loinc.org", "code": "LA33-6"}
NO = {"system": "http://loinc.org", "code": "LA32-8"}


def _owner() -> str:
    return f"Organization/unit-{uuid.uuid4().hex[:8]}"


def _task(client, owner, priority=None, authored="2024-06-03T09:00:00Z", status="requested", patient=None):
    body = {"resourceType": "Task", "status": status, "intent": "order", "owner": {"reference": owner}, "authoredOn": authored}
    if priority:
        body["priority"] = priority
    if patient:
        body["for"] = {"reference": patient}
    r = client.post("/fhir/Task", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _ids(bundle):
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_sort_priority_follows_rank_not_alphabet(client):
    owner = _owner()
    ids = {p: _task(client, owner, p) for p in ("asap", "routine", "stat", "urgent")}
    up = client.get("/fhir/Task", params={"owner": owner, "_sort": "priority"}).json()
    assert _ids(up) == [ids[p] for p in ("routine", "urgent", "asap", "stat")]
    down = client.get("/fhir/Task", params={"owner": owner, "_sort": "-priority"}).json()
    assert _ids(down) == [ids[p] for p in ("stat", "asap", "urgent", "routine")]
    # paging through the ranked order keeps it
    page = client.get("/fhir/Task", params={"owner": owner, "_sort": "-priority", "_count": "3"}).json()
    nxt = [l["url"] for l in page["link"] if l["relation"] == "next"][0]
    rest = client.get(nxt.replace("http://testserver", "")).json()
    assert _ids(page) + _ids(rest) == _ids(down)


def test_other_ordered_resources_sort_by_rank(client):
    subject = f"Patient/{uuid.uuid4().hex[:8]}"
    made = {}
    for p in ("urgent", "stat", "routine"):
        r = client.post("/fhir/ServiceRequest", json={"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                                                       "priority": p, "subject": {"reference": subject}})
        made[p] = r.json()["id"]
    got = client.get("/fhir/ServiceRequest", params={"subject": subject, "_sort": "-priority"}).json()
    assert _ids(got) == [made["stat"], made["urgent"], made["routine"]]


def test_capability_statement_states_the_rank(client):
    cs = client.get("/fhir/metadata").json()
    task = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Task")
    doc = next(p for p in task["searchParam"] if p["name"] == "priority")["documentation"]
    assert "routine < urgent < asap < stat" in doc
    assert any(o["name"] == "queue-position" for o in task["operation"])


@pytest.mark.parametrize("resource", [
    {"resourceType": "Task", "status": "requested", "intent": "order", "priority": "whenever"},
    {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "soonish", "subject": {"reference": "Patient/x"}},
])
def test_invalid_priority_is_422_and_not_stored(client, resource):
    marker = uuid.uuid4().hex
    resource = {**resource, "identifier": [{"system": "urn:test", "value": marker}]}
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == [f"{resource['resourceType']}.priority"]
    assert client.get(f"/fhir/{resource['resourceType']}", params={"identifier": f"urn:test|{marker}"}).json()["total"] == 0


def test_queue_order_and_position(client):
    owner = _owner()
    a = _task(client, owner, "routine", "2024-06-03T09:00:00Z")
    b = _task(client, owner, "stat", "2024-06-03T10:00:00Z")
    c = _task(client, owner, "urgent", "2024-06-03T08:00:00Z")
    d = _task(client, owner, None, "2024-06-03T08:30:00Z")  # no priority = routine
    e = _task(client, owner, "stat", "2024-06-03T09:30:00Z")
    _task(client, owner, "stat", "2024-06-03T07:00:00Z", status="completed")  # not waiting
    expected = [e, b, c, d, a]
    for n, tid in enumerate(expected, start=1):
        params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in client.get(f"/fhir/Task/{tid}/$queue-position").json()["parameter"]}
        assert (params["position"], params["ahead"], params["queueLength"]) == (n, n - 1, 5)
    search = client.get("/fhir/Task", params={"owner": owner, "status": "requested,received,accepted,ready", "_sort": "-priority,authored-on"}).json()
    assert _ids(search)[:4] == [e, b, c, a] and _ids(search)[4] == d  # search puts a missing priority last
    # staff take the first: everybody moves up
    task = client.get(f"/fhir/Task/{e}").json()
    task["status"] = "in-progress"
    assert client.put(f"/fhir/Task/{e}", json=task).status_code == 200
    got = {p["name"]: p for p in client.get(f"/fhir/Task/{b}/$queue-position").json()["parameter"]}
    assert got["position"]["valueInteger"] == 1 and got["queueLength"]["valueInteger"] == 4
    got = {p["name"]: p for p in client.get(f"/fhir/Task/{e}/$queue-position").json()["parameter"]}
    assert "position" not in got and got["status"]["valueCode"] == "in-progress"
    assert client.get("/fhir/Task/nope/$queue-position").status_code == 404


@pytest.mark.parametrize("now,is_open,answers_from,expected_start", [
    ("2024-06-03T05:00:00Z", False, "2024-06-03T06:00:00.000Z", "2024-06-03T06:20:00.000Z"),  # Monday before 08 local
    ("2024-06-03T10:00:00Z", True, "2024-06-03T10:00:00.000Z", "2024-06-03T10:20:00.000Z"),  # open
    ("2024-06-03T13:55:00Z", True, "2024-06-03T13:55:00.000Z", "2024-06-04T06:15:00.000Z"),  # 5 open minutes left
    ("2024-06-08T12:30:00Z", False, "2024-06-09T08:00:00.000Z", "2024-06-09T08:20:00.000Z"),  # Saturday after 14 local
])
def test_opening_hours_say_when_an_answer_can_be_expected(client, monkeypatch, now, is_open, answers_from, expected_start):
    monkeypatch.setattr(queue_position, "now_utc", lambda: datetime.fromisoformat(now.replace("Z", "+00:00")))
    owner = "Organization/care-unit-central-test-" + uuid.uuid4().hex[:6]  # 'default' hours
    _task(client, owner, "stat")
    _task(client, owner, "stat")
    third = _task(client, owner, "urgent")
    got = {p["name"]: p for p in client.get(f"/fhir/Task/{third}/$queue-position").json()["parameter"]}
    assert got["open"]["valueBoolean"] is is_open
    assert got["answersFrom"]["valueDateTime"] == answers_from
    assert got["expectedStart"]["valueDateTime"] == expected_start


def _symptoms(patient, chest, fever, temperature=None):
    items = [{"linkId": "complaint", "answer": [{"valueString": "cough"}]},
             {"linkId": "chest-pain", "answer": [{"valueCoding": chest}]},
             {"linkId": "fever", "answer": [{"valueCoding": fever}]}]
    if temperature is not None:
        items.append({"linkId": "temperature", "answer": [{"valueDecimal": temperature}]})
    return {"resourceType": "QuestionnaireResponse", "questionnaire": SYMPTOMS, "status": "completed",
            "subject": {"reference": patient}, "authored": "2024-06-03T08:00:00Z", "item": items}


@pytest.mark.parametrize("chest,fever,temperature,priority", [
    (YES, NO, None, "stat"), (NO, YES, 40.1, "asap"), (NO, YES, 38.2, "urgent"), (NO, NO, None, "routine"),
])
def test_completed_symptom_questionnaire_starts_a_visit(client, chest, fever, temperature, priority):
    patient = f"Patient/{uuid.uuid4().hex[:8]}"
    r = client.post("/fhir/QuestionnaireResponse", json=_symptoms(patient, chest, fever, temperature))
    assert r.status_code == 201, r.text
    qr = r.json()
    task = client.get(f"/fhir/Task/{visit_task_id(qr['id'])}").json()
    assert task["status"] == "requested" and task["priority"] == priority
    assert task["focus"] == {"reference": f"QuestionnaireResponse/{qr['id']}"}
    assert task["for"] == {"reference": patient}
    assert task["owner"] == {"reference": "Organization/care-unit-central"}
    assert task["authoredOn"] == "2024-06-03T08:00:00Z"
    found = client.get("/fhir/Task", params={"patient": patient}).json()
    assert found["total"] == 1  # an update of the response does not queue a second visit
    qr["status"] = "amended"
    client.put(f"/fhir/QuestionnaireResponse/{qr['id']}", json=qr)
    assert client.get("/fhir/Task", params={"patient": patient}).json()["total"] == 1


def test_symptom_response_with_a_temperature_but_no_fever_is_refused(client):
    r = client.post("/fhir/QuestionnaireResponse", json=_symptoms("Patient/x", NO, NO, 39.0))
    assert r.status_code == 422  # temperature is enabled only when fever = yes


def test_in_progress_tells_the_patient_once(client, monkeypatch):
    sent = []
    monkeypatch.setattr(turn, "_deliver", lambda conn, patient, task: sent.append((patient, task["id"])) or True)
    patient = f"Patient/{uuid.uuid4().hex[:8]}"
    qr = client.post("/fhir/QuestionnaireResponse", json=_symptoms(patient, NO, NO)).json()
    tid = visit_task_id(qr["id"])
    task = client.get(f"/fhir/Task/{tid}").json()
    task["status"] = "accepted"
    client.put(f"/fhir/Task/{tid}", json=task)
    assert sent == []
    task["status"] = "in-progress"
    task.pop("meta")  # a staff client that drops the tag still counts as a visit
    client.put(f"/fhir/Task/{tid}", json=task)
    client.put(f"/fhir/Task/{tid}", json={**task, "description": "talking"})
    assert sent == [(patient, tid)]
    # other Tasks (not visits) do not message anybody
    other = _task(client, _owner(), "stat", patient=patient)
    t = client.get(f"/fhir/Task/{other}").json()
    client.put(f"/fhir/Task/{other}", json={**t, "status": "in-progress"})
    assert sent == [(patient, tid)]


def test_your_turn_for_an_unknown_patient_does_not_fail_the_update(client):
    qr = client.post("/fhir/QuestionnaireResponse", json=_symptoms("Patient/nn", NO, NO)).json()
    tid = visit_task_id(qr["id"])
    task = client.get(f"/fhir/Task/{tid}").json()
    assert client.put(f"/fhir/Task/{tid}", json={**task, "status": "in-progress"}).status_code == 200


def test_your_turn_is_queued_with_the_notifier(client):
    """The real notifier: a CommunicationRequest for the patient, about the visit Task."""
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "telecom": [{"system": "sms", "value": "+46701234567"}]}).json()["id"]
    qr = client.post("/fhir/QuestionnaireResponse", json=_symptoms(f"Patient/{pid}", NO, NO)).json()
    tid = visit_task_id(qr["id"])
    task = client.get(f"/fhir/Task/{tid}").json()
    assert client.put(f"/fhir/Task/{tid}", json={**task, "status": "in-progress"}).status_code == 200
    found = client.get(f"/fhir/CommunicationRequest?subject=Patient/{pid}").json().get("entry", [])
    assert [e["resource"]["about"][0]["reference"] for e in found] == [f"Task/{tid}"]


@pytest.mark.parametrize("how", ["put", "patch", "transaction"])
def test_invalid_priority_is_422_on_update_patch_and_in_a_transaction(client, how):
    tid = _task(client, _owner(), "routine")
    task = client.get(f"/fhir/Task/{tid}").json()
    if how == "put":
        r = client.put(f"/fhir/Task/{tid}", json={**task, "priority": "whenever"})
    elif how == "patch":
        r = client.patch(f"/fhir/Task/{tid}", json=[{"op": "replace", "path": "/priority", "value": "whenever"}],
                         headers={"Content-Type": "application/json-patch+json"})
    else:
        r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {**task, "priority": "whenever"}, "request": {"method": "PUT", "url": f"Task/{tid}"}}]})
    assert r.status_code == 422, r.text
    assert any("priority" in e for i in r.json()["issue"] for e in i.get("expression", []))
    after = client.get(f"/fhir/Task/{tid}").json()
    assert after["priority"] == "routine" and after["meta"]["versionId"] == task["meta"]["versionId"]


def test_a_patient_sees_their_own_place_and_nobody_elses(client, anonymous_client):
    from tests.conftest import make_token

    owner = _owner()
    ann = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    bob = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    bobs = _task(client, owner, "stat", patient=f"Patient/{bob}")
    anns = _task(client, owner, "routine", patient=f"Patient/{ann}")
    as_ann = {"Authorization": f"Bearer {make_token('patient/Task.rs', patient=ann)}"}
    r = anonymous_client.get(f"/fhir/Task/{anns}/$queue-position", headers=as_ann)
    assert r.status_code == 200, r.text
    got = {p["name"]: p for p in r.json()["parameter"]}
    assert (got["position"]["valueInteger"], got["ahead"]["valueInteger"]) == (2, 1)  # Bob's stat visit is first
    other = anonymous_client.get(f"/fhir/Task/{bobs}/$queue-position", headers=as_ann)
    assert other.status_code == 404 and "stat" not in other.text  # not even that it exists
    no_task_scope = {"Authorization": f"Bearer {make_token('patient/Observation.rs', patient=ann)}"}
    assert anonymous_client.get(f"/fhir/Task/{anns}/$queue-position", headers=no_task_scope).status_code == 403
