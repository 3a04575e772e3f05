"""Topic-based subscriptions (Subscriptions R5 Backport IG on R4): the shipped
topics, filters, payload content, handshake, heartbeat, $status and $events."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from fhir_server.subscriptions import topics

from .conftest import BACKPORT, TOPIC, topic_subscription


def _focus(receiver) -> list[str]:
    """'Type/id' of every event's focus, in the order received."""
    out = []
    for note in receiver.notifications():
        if note["type"] != "event-notification":
            continue
        for p in note["bundle"]["entry"][0]["resource"]["parameter"]:
            if p["name"] == "notification-event":
                ref = [x for x in p["part"] if x["name"] == "focus"][0]["valueReference"]["reference"]
                out.append("/".join(ref.split("/_history")[0].split("/")[-2:]))
    return out


def _post(client, resource: dict) -> dict:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


def _put(client, resource: dict) -> dict:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code == 200, r.text
    return r.json()


def _appointment(patient: str, status: str = "booked", start: str = "2030-01-01T10:00:00Z") -> dict:
    return {"resourceType": "Appointment", "status": status, "start": start, "end": start.replace("10:00", "10:30"),
            "participant": [{"actor": {"reference": patient}, "status": "accepted"}]}


def _patient_ref() -> str:
    return f"Patient/{uuid.uuid4().hex[:12]}"


def test_shipped_topics_are_well_formed():
    from fhir_server.search.registry import search_parameters_for

    shipped = topics.all_topics()
    names = {url.rsplit("/", 1)[1] for url in shipped}
    assert {"appointment-booked", "appointment-changed", "appointment-cancelled", "questionnaireresponse-completed",
            "communication-received", "task-status-changed", "claimresponse-issued"} <= names
    for topic in shipped.values():
        assert topic.triggers
        for res_type, params in topic.filters.items():
            known = search_parameters_for(res_type)
            assert params <= set(known), (topic.url, params - set(known))


def test_appointment_booked(client, subscribe, receiver, deliver):
    patient = _patient_ref()
    subscribe(topic_subscription("appointment-booked", receiver.url, filters=[f"Appointment?patient={patient}"]))
    booked = _post(client, _appointment(patient))
    proposed = _post(client, _appointment(patient, status="proposed"))
    _put(client, dict(booked, comment="still booked"))  # no change of status: no event
    now_booked = _put(client, dict(proposed, status="booked"))
    _post(client, _appointment(_patient_ref()))  # another patient: filtered out
    deliver()
    notes = receiver.notifications()
    assert notes[0]["type"] == "handshake"
    assert _focus(receiver) == [f"Appointment/{booked['id']}", f"Appointment/{now_booked['id']}"]
    assert receiver.event_numbers() == [1, 2]


def test_appointment_changed_and_cancelled(client, subscribe, receiver, deliver):
    patient = _patient_ref()
    subscribe(topic_subscription("appointment-changed", receiver.url, filters=[f"Appointment?patient={patient}"]))
    cancelled_rx = type(receiver)()
    try:
        subscribe(topic_subscription("appointment-cancelled", cancelled_rx.url, filters=[f"Appointment?patient={patient}"]))
        a = _post(client, _appointment(patient))
        moved = _put(client, dict(a, start="2030-01-02T10:00:00Z", end="2030-01-02T10:30:00Z"))
        cancelled = _put(client, dict(moved, status="cancelled"))
        b = _post(client, _appointment(patient))
        _post(client, _appointment(patient, status="cancelled"))  # created cancelled: not a cancellation event
        assert client.delete(f"/fhir/Appointment/{b['id']}").status_code == 200
        deliver()
        assert _focus(receiver) == [f"Appointment/{a['id']}"]
        assert _focus(cancelled_rx) == [f"Appointment/{cancelled['id']}", f"Appointment/{b['id']}"]
    finally:
        cancelled_rx.stop()


def test_questionnaire_response_completed(client, subscribe, receiver, deliver):
    patient = _patient_ref()
    subscribe(topic_subscription("questionnaireresponse-completed", receiver.url,
                                 filters=[f"QuestionnaireResponse?subject={patient}"]))
    qr = _post(client, {"resourceType": "QuestionnaireResponse", "status": "in-progress", "subject": {"reference": patient}})
    assert _focus(receiver) == []
    _put(client, dict(qr, status="completed"))
    _put(client, dict(qr, status="completed", authored="2030-01-01"))  # already completed: no event
    deliver()
    assert _focus(receiver) == [f"QuestionnaireResponse/{qr['id']}"]


def test_communication_received(client, subscribe, receiver, deliver):
    recipient = _patient_ref()
    subscribe(topic_subscription("communication-received", receiver.url, filters=[f"Communication?recipient={recipient}"],
                                 content="full-resource"))
    msg = _post(client, {"resourceType": "Communication", "status": "in-progress", "recipient": [{"reference": recipient}],
                         "payload": [{"contentString": "Hello"}]})
    _put(client, dict(msg, status="completed"))
    deliver()
    assert _focus(receiver) == [f"Communication/{msg['id']}"] * 2
    entries = [n["bundle"]["entry"] for n in receiver.notifications() if n["type"] == "event-notification"]
    assert [e[1]["resource"]["status"] for e in entries] == ["in-progress", "completed"]
    assert entries[0][1]["request"] == {"method": "POST", "url": "Communication"}


def test_task_status_changed_and_claimresponse_issued(client, subscribe, receiver, deliver):
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    patient = _patient_ref()
    subscribe(topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"]))
    subscribe(topic_subscription("claimresponse-issued", receiver.url, filters=[f"ClaimResponse?patient={patient}"]))
    task = _post(client, {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}})
    _put(client, dict(task, description="same status"))
    _put(client, dict(task, status="accepted"))
    claim_response = {"resourceType": "ClaimResponse", "status": "draft", "type": {"coding": [{"code": "professional"}]},
                      "use": "claim", "patient": {"reference": patient}, "created": "2030-01-01", "insurer": {"display": "I"},
                      "outcome": "complete"}
    draft = _post(client, claim_response)
    issued = _put(client, dict(draft, status="active"))
    _put(client, dict(issued, disposition="unchanged status"))
    direct = _post(client, dict(claim_response, status="active"))
    deliver()
    focus = _focus(receiver)  # order is kept per subscription, not across them
    assert [f for f in focus if f.startswith("Task/")] == [f"Task/{task['id']}", f"Task/{task['id']}"]
    assert [f for f in focus if f.startswith("ClaimResponse/")] == [f"ClaimResponse/{draft['id']}", f"ClaimResponse/{direct['id']}"]


def test_filters_are_checked(subscribe, receiver):
    out = subscribe(topic_subscription("appointment-booked", receiver.url, filters=["Appointment?status=booked"]), expect=400)
    assert "does not allow" in out["issue"][0]["diagnostics"]
    subscribe(topic_subscription("appointment-booked", receiver.url, filters=["Patient?name=x"]), expect=400)
    subscribe(topic_subscription("appointment-booked", receiver.url, filters=["Appointment?patient:nonsense=x"]), expect=400)
    unknown = topic_subscription("appointment-booked", receiver.url)
    unknown["criteria"] = TOPIC + "no-such-topic"
    subscribe(unknown, expect=400)


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_payload_content(client, subscribe, receiver, deliver, content):
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    subscribe(topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"], content=content))
    task = _post(client, {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}})
    deliver()
    note = [n for n in receiver.notifications() if n["type"] == "event-notification"][0]
    bundle = note["bundle"]
    assert bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    events = [p for p in status["parameter"] if p["name"] == "notification-event"]
    focus = [x for x in events[0]["part"] if x["name"] == "focus"]
    if content == "empty":
        assert len(bundle["entry"]) == 1 and focus
    elif content == "id-only":
        assert bundle["entry"][1]["fullUrl"].endswith(f"/Task/{task['id']}") and "resource" not in bundle["entry"][1]
    else:
        assert bundle["entry"][1]["resource"]["id"] == task["id"]


def test_max_count_batches_events(client, subscribe, receiver, deliver):
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    subscribe(topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"], max_count=3))
    for _ in range(5):
        _post(client, {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}})
    deliver()
    assert [n["numbers"] for n in receiver.notifications() if n["type"] == "event-notification"] == [[1, 2, 3], [4, 5]]


def test_heartbeat(client, subscribe, receiver, deliver, app):
    from fhir_server.subscriptions.tables import subscriptions

    sub = subscribe(topic_subscription("task-status-changed", receiver.url, heartbeat=60,
                                       filters=[f"Task?owner=Practitioner/{uuid.uuid4().hex}"]))
    deliver()
    assert [n["type"] for n in receiver.notifications()] == ["handshake"]
    deliver()
    assert [n["type"] for n in receiver.notifications()] == ["handshake"]  # not due yet
    with app.state.db.write() as conn:  # a minute passes
        conn.execute(subscriptions.update().where(subscriptions.c.id == sub["id"]).values(
            last_sent=datetime.now(timezone.utc) - timedelta(seconds=61)))
    deliver()
    assert [n["type"] for n in receiver.notifications()] == ["handshake", "heartbeat"]


def test_status_and_events_operations(client, subscribe, receiver, deliver):
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    sub = subscribe(topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"]))
    ids = [_post(client, {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}})["id"]
           for _ in range(4)]
    status = client.get(f"/fhir/Subscription/{sub['id']}/$status").json()
    assert status["type"] == "searchset"
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["type"]["valueCode"] == "query-status"
    assert params["events-since-subscription-start"]["valueString"] == "4"
    assert params["topic"]["valueCanonical"] == TOPIC + "task-status-changed"
    by_type = client.get("/fhir/Subscription/$status", params={"id": sub["id"]}).json()
    assert by_type["total"] == 1
    events = client.get(f"/fhir/Subscription/{sub['id']}/$events",
                        params={"eventsSinceNumber": 2, "eventsUntilNumber": 3, "content": "full-resource"}).json()
    assert events["type"] == "history"
    ps = events["entry"][0]["resource"]["parameter"]
    assert [p for p in ps if p["name"] == "type"][0]["valueCode"] == "query-event"
    assert [e["resource"]["id"] for e in events["entry"][1:]] == ids[1:3]
    assert client.get(f"/fhir/Subscription/{sub['id']}/$events", params={"eventsSinceNumber": "x"}).status_code == 400
    # past what an event number can be (BIGINT), or below 0: 400, never a database error
    for number in ("99999999999999999999999", "-1"):
        r = client.get(f"/fhir/Subscription/{sub['id']}/$events", params={"eventsUntilNumber": number})
        assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["eventsUntilNumber"], r.text
    assert client.get(f"/fhir/Subscription/{sub['id']}/$events", params={"content": "all"}).status_code == 400
    assert client.get("/fhir/Subscription/unknown-sub/$status").status_code == 404
    assert client.get("/fhir/Subscription/$status").status_code == 400


def test_capability_statement_lists_the_topics(client):
    statement = client.get("/fhir/metadata").json()
    entry = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"][0]
    canonicals = {e["valueCanonical"] for e in entry.get("extension", [])
                  if e["url"].endswith("capabilitystatement-subscriptiontopic-canonical")}
    assert canonicals == set(topics.all_topics())
    assert {"status", "events", "get-ws-binding-token"} <= {op["name"] for op in entry["operation"]}


def test_claims_workflow_writes_are_events(client, subscribe, receiver, deliver):
    """Writes the claims workflow makes inside $submit's transaction (the ClaimResponse of an
    approval, the Task of a request for more, the handler's decision closing it) are events
    like any other: the insurer's systems hear of them."""
    from tests.workflows.claims_journey import claim, decision, eligible_items, submit_params, treatment

    insurer = "Organization/" + _post(client, {"resourceType": "Organization", "name": "Subs Insurer"})["id"]
    patient = "Patient/" + _post(client, {"resourceType": "Patient", "name": [{"family": "ClaimSubs"}]})["id"]
    coverage = "Coverage/" + _post(client, {"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": patient},
                                            "payor": [{"reference": insurer}]})["id"]
    subscribe(topic_subscription("claimresponse-issued", receiver.url, filters=[f"ClaimResponse?patient={patient}"]))
    subscribe(topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={insurer}"]))
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment()])))
    approved = r.json()
    more = claim(patient, coverage, insurer, items=[treatment(quantity=3)], related=[
        {"claim": approved["request"], "relationship": {"coding": [{"code": "prior"}]}}])
    queued = client.post("/fhir/Claim/$submit", json=submit_params(more)).json()
    more_id = queued["request"]["reference"].split("/")[1]
    [task] = [e["resource"] for e in client.get("/fhir/Task", params={"focus": f"Claim/{more_id}"}).json()["entry"]]
    decided = client.post("/fhir/ClaimResponse", json=decision(more_id, patient, insurer, "preauthorization", item=eligible_items(3)))
    assert decided.status_code == 201, decided.text
    deliver()
    focus = _focus(receiver)
    assert [f for f in focus if f.startswith("ClaimResponse/")] == [
        f"ClaimResponse/{approved['id']}", f"ClaimResponse/{queued['id']}", f"ClaimResponse/{decided.json()['id']}"]
    assert [f for f in focus if f.startswith("Task/")] == [f"Task/{task['id']}", f"Task/{task['id']}"]  # created, completed


def test_endpoint_slower_than_the_timeout_is_a_failure_and_the_event_waits(app, client, subscribe, receiver, deliver):
    """`backport-timeout` (seconds) bounds each request: an endpoint that does not answer in
    time counts as a failed delivery, the event stays queued, and goes out once it answers."""
    import time

    from sqlalchemy import select

    from fhir_server.subscriptions.tables import subscription_events, subscriptions

    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    sub = topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"])
    sub["channel"].setdefault("extension", []).append({"url": BACKPORT + "backport-timeout", "valueUnsignedInt": 1})
    sub = subscribe(sub)
    deliver()  # the handshake
    receiver.requests.clear()
    task = _post(client, {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}})
    receiver.delay = 3.0
    started = time.monotonic()
    deliver(subscription_retry_base_seconds=0.0, subscription_retry_max_seconds=0.0)
    assert time.monotonic() - started < 2.9  # gave up after the subscription's 1 s, not the endpoint's 3 s
    with app.state.db.read() as conn:
        row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub["id"])).first()
        pending = conn.execute(select(subscription_events.c.status).where(
            subscription_events.c.sub_id == sub["id"], subscription_events.c.kind == "event-notification")).scalars().all()
    assert row.failures == 1 and "timed out" in row.last_error.lower()
    assert pending == ["pending"]
    receiver.delay = 0.0
    deliver(subscription_retry_base_seconds=0.0, subscription_retry_max_seconds=0.0)
    # (the receiver may also record the first, abandoned try when its slow answer ends: at least once)
    assert f"Task/{task['id']}" in _focus(receiver)
    with app.state.db.read() as conn:
        assert conn.execute(select(subscriptions.c.failures).where(subscriptions.c.id == sub["id"])).scalar() == 0
        assert conn.execute(select(subscription_events.c.status).where(
            subscription_events.c.sub_id == sub["id"], subscription_events.c.kind == "event-notification")).scalars().all() == ["sent"]
