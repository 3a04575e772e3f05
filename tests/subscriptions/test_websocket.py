"""The websocket channel: R4 bind/ping, and the Backport IG's bind-with-token."""

from __future__ import annotations

import json
import uuid

from .conftest import r4_subscription, topic_subscription


def _status(bundle: dict) -> dict:
    return {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}


def test_r4_bind_and_ping(client, subscribe, deliver):
    family = "Ws" + uuid.uuid4().hex[:8]
    sub = subscribe(r4_subscription(f"Patient?family={family}", None, channel_type="websocket"))
    with client.websocket_connect("/fhir/websocket") as ws:
        ws.send_text("bind no-such-subscription")
        assert ws.receive_text().startswith("error")
        ws.send_text(f"bind {sub['id']}")
        assert ws.receive_text() == f"bound {sub['id']}"
        assert client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}).status_code == 201
        deliver()
        assert ws.receive_text() == f"ping {sub['id']}"
        ws.send_text("hello")
        assert ws.receive_text().startswith("error unknown command")


def _token(client, sub_id: str) -> dict:
    r = client.post(f"/fhir/Subscription/{sub_id}/$get-ws-binding-token")
    assert r.status_code == 200, r.text
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in r.json()["parameter"]}


def _task(client, owner: str) -> str:
    r = client.post("/fhir/Task", json={"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}})
    assert r.status_code == 201
    return r.json()["id"]


def test_bind_with_token_handshake_and_notifications(client, subscribe, deliver):
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    sub = subscribe(topic_subscription("task-status-changed", None, filters=[f"Task?owner={owner}"],
                                       content="full-resource", channel_type="websocket"))
    token = _token(client, sub["id"])
    assert token["websocket-url"] == "ws://testserver/fhir/websocket"
    assert token["subscription"].endswith(f"/Subscription/{sub['id']}")
    with client.websocket_connect("/fhir/websocket") as ws:
        ws.send_text("bind-with-token not-a-token")
        assert ws.receive_text() == "error invalid or expired binding token"
        ws.send_text(f"bind-with-token {token['token']}")
        handshake = json.loads(ws.receive_text())
        assert handshake["type"] == "history" and _status(handshake)["type"]["valueCode"] == "handshake"
        first = _task(client, owner)
        deliver()
        note = json.loads(ws.receive_text())
        assert _status(note)["type"]["valueCode"] == "event-notification"
        assert note["entry"][1]["resource"]["id"] == first
    # while nobody listens, events wait in the outbox
    second = _task(client, owner)
    deliver()
    with client.websocket_connect("/fhir/websocket") as ws:
        ws.send_text(f"bind-with-token {_token(client, sub['id'])['token']}")
        assert _status(json.loads(ws.receive_text()))["type"]["valueCode"] == "handshake"
        deliver()
        note = json.loads(ws.receive_text())
        numbers = [part["valueString"] for p in note["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"
                   for part in p["part"] if part["name"] == "event-number"]
        assert numbers == ["2"] and note["entry"][1]["resource"]["id"] == second


def test_token_only_for_websocket_subscriptions(client, subscribe, receiver):
    sub = subscribe(topic_subscription("task-status-changed", receiver.url))
    r = client.post(f"/fhir/Subscription/{sub['id']}/$get-ws-binding-token")
    assert r.status_code == 400
    assert client.post("/fhir/Subscription/unknown/$get-ws-binding-token").status_code == 404
