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


# ------------------------------------------------------------------ authentication


def _anonymous_socket(app):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://testserver")


def test_r4_bind_needs_a_token_that_may_read_the_subscription(app, client, subscribe, issue_token):
    import pytest
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    sub = subscribe(r4_subscription("Patient?family=WsAuth" + uuid.uuid4().hex[:6], None, channel_type="websocket"))
    with _anonymous_socket(app) as anon, anon.websocket_connect("/fhir/websocket") as ws:
        ws.send_text(f"bind {sub['id']}")
        reply = ws.receive_text()
        assert reply.startswith("error ") and "token" in reply
    # a token that may not read Subscriptions
    narrow = issue_token(scope="user/Patient.rs", fhir_user="Practitioner/ws-1")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {narrow}"}) as c:
        with c.websocket_connect("/fhir/websocket") as ws:
            ws.send_text(f"bind {sub['id']}")
            assert ws.receive_text().startswith("error ")
    # an invalid bearer token: the upgrade itself is refused
    with TestClient(app, base_url="http://testserver", headers={"Authorization": "Bearer not-a-jwt"}) as c:
        with pytest.raises(WebSocketDisconnect) as exc:
            with c.websocket_connect("/fhir/websocket"):
                pass
        assert exc.value.code == 1008
    # a token that may read it, and the Patients it carries
    reader = issue_token(scope="user/Subscription.rs user/Patient.rs", fhir_user="Practitioner/ws-2")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {reader}"}) as c:
        with c.websocket_connect("/fhir/websocket") as ws:
            ws.send_text(f"bind {sub['id']}")
            assert ws.receive_text() == f"bound {sub['id']}"


def test_binding_token_is_short_lived_and_bound_to_its_subscriptions(app, client, subscribe, issue_token):
    from datetime import datetime, timezone

    from fastapi.testclient import TestClient

    from fhir_server.security import authz

    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    one = subscribe(topic_subscription("task-status-changed", None, filters=[f"Task?owner={owner}"], channel_type="websocket"))
    # never past the access token it was issued to
    short = issue_token(scope="user/Subscription.rs user/Task.rs", fhir_user="Practitioner/ws-3", ttl=30)
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {short}"}) as c:
        r = c.post(f"/fhir/Subscription/{one['id']}/$get-ws-binding-token")
        assert r.status_code == 200, r.text
        params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in r.json()["parameter"]}
    expires = datetime.fromisoformat(params["expiration"].replace("Z", "+00:00"))
    assert (expires - datetime.now(timezone.utc)).total_seconds() <= 31
    # redeemed only while the requester may still read the subscription
    token = _token(client, one["id"])["token"]

    class NoSubscriptions:
        def check(self, principal, request):
            return "no subscriptions today" if request.res_type == "Subscription" and not principal.unrestricted else None

    authz.set_policies([authz.AllowAll(), NoSubscriptions()])
    try:
        with _anonymous_socket(app) as anon, anon.websocket_connect("/fhir/websocket") as ws:
            ws.send_text(f"bind-with-token {token}")
            assert ws.receive_text() == "error invalid or expired binding token"
    finally:
        authz.set_policies([authz.AllowAll()])
    with _anonymous_socket(app) as anon, anon.websocket_connect("/fhir/websocket") as ws:
        ws.send_text(f"bind-with-token {token}")
        assert _status(json.loads(ws.receive_text()))["subscription"]["valueReference"]["reference"].endswith(one["id"])


def test_binary_frames_and_unknown_commands_get_an_error_and_the_socket_stays(client, subscribe):
    """The protocol's commands are text frames; anything else is answered `error ...`, never a crash."""
    sub = subscribe(r4_subscription("Patient?family=WsFrames" + uuid.uuid4().hex[:6], None, channel_type="websocket"))
    with client.websocket_connect("/fhir/websocket") as ws:
        ws.send_bytes(b"\x00\x01bind")
        assert ws.receive_text().startswith("error send commands as text frames")
        ws.send_text("")
        assert ws.receive_text().startswith("error unknown command")
        ws.send_text("bind-with-token")
        assert ws.receive_text() == "error invalid or expired binding token"
        ws.send_text(f"bind {sub['id']}")  # still usable
        assert ws.receive_text() == f"bound {sub['id']}"


def test_deleted_subscription_is_gone_for_its_operations_and_its_binding_token(client, subscribe):
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    sub = subscribe(topic_subscription("task-status-changed", None, filters=[f"Task?owner={owner}"], channel_type="websocket"))
    token = _token(client, sub["id"])["token"]
    assert client.delete(f"/fhir/Subscription/{sub['id']}").status_code in (200, 204)
    for op in ("$get-ws-binding-token", "$status", "$events"):
        r = client.post(f"/fhir/Subscription/{sub['id']}/{op}") if op.startswith("$get") else client.get(f"/fhir/Subscription/{sub['id']}/{op}")
        assert r.status_code == 410 and r.json()["issue"][0]["code"] == "deleted", (op, r.text)
    with client.websocket_connect("/fhir/websocket") as ws:
        ws.send_text(f"bind-with-token {token}")
        assert ws.receive_text() == "error invalid or expired binding token"


def test_only_who_may_see_what_it_carries_may_bind(app, client, subscribe, issue_token, deliver, subscriptions_made):
    """Reading Subscriptions is not enough to listen to one: a token that may not read Tasks
    gets no binding token (403) and no R4 bind for a subscription carrying Tasks; the
    subscription's owner (a patient-context portal backend) binds to its own; a second
    principal with the same scopes but another patient context may not."""
    from fastapi.testclient import TestClient

    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    sub = subscribe(topic_subscription("task-status-changed", None, filters=[f"Task?owner={owner}"],
                                       content="full-resource", channel_type="websocket"))
    snoop = issue_token(scope="user/Subscription.rs", fhir_user="Practitioner/snoop")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {snoop}"}) as c:
        r = c.post(f"/fhir/Subscription/{sub['id']}/$get-ws-binding-token")
        assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden", r.text
        with c.websocket_connect("/fhir/websocket") as ws:
            ws.send_text(f"bind {sub['id']}")
            assert ws.receive_text().startswith("error no active websocket subscription")
    # a token issued earlier to the system client still works for it
    token = _token(client, sub["id"])["token"]
    with client.websocket_connect("/fhir/websocket") as ws:
        ws.send_text(f"bind-with-token {token}")
        assert _status(json.loads(ws.receive_text()))["type"]["valueCode"] == "handshake"

    # a portal backend owning a patient-context subscription binds to it; another context may not
    patient = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "WsOwn"}]}).json()["id"]
    scope = "system/Subscription.cruds patient/Observation.rs"
    mine = issue_token(scope=scope, patient=patient, fhir_user="Practitioner/portal-backend")
    other = issue_token(scope=scope, patient="someone-else", fhir_user="Practitioner/portal-backend")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {mine}"}) as c:
        r = c.post("/fhir/Subscription", json=r4_subscription("Observation?code=http://loinc.org|1-8", None, channel_type="websocket"))
        assert r.status_code == 201, r.text
        own = r.json()["id"]
        subscriptions_made.append(own)
        assert c.post(f"/fhir/Subscription/{own}/$get-ws-binding-token").status_code == 200
        with c.websocket_connect("/fhir/websocket") as ws:
            ws.send_text(f"bind {own}")
            assert ws.receive_text() == f"bound {own}"
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {other}"}) as c:
        assert c.post(f"/fhir/Subscription/{own}/$get-ws-binding-token").status_code == 403


def test_real_websocket_client_over_the_network(live_server, auth_headers, subscribe, deliver):
    """A websocket client of its own (the `websockets` library) against the server on a real
    port: bind-with-token, the handshake, then an event written over HTTP arrives as a
    notification Bundle; R4 bind with the bearer token on the upgrade request gets its ping."""
    import httpx
    from websockets.sync.client import connect

    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    sub = subscribe(topic_subscription("task-status-changed", None, filters=[f"Task?owner={owner}"],
                                       content="id-only", channel_type="websocket"))
    with httpx.Client(base_url=live_server, headers=auth_headers, timeout=30) as http:
        r = http.post(f"/Subscription/{sub['id']}/$get-ws-binding-token")
        assert r.status_code == 200, r.text
        params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in r.json()["parameter"]}
        assert params["websocket-url"] == live_server.replace("http://", "ws://") + "/websocket"
        with connect(params["websocket-url"], open_timeout=10) as ws:
            ws.send(f"bind-with-token {params['token']}")
            assert _status(json.loads(ws.recv(timeout=10)))["type"]["valueCode"] == "handshake"
            task = http.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order",
                                            "owner": {"reference": owner}}).json()["id"]
            deliver()
            note = json.loads(ws.recv(timeout=10))
            assert _status(note)["type"]["valueCode"] == "event-notification"
            assert note["entry"][1]["fullUrl"].endswith(f"Task/{task}")
        family = "WsNet" + uuid.uuid4().hex[:6]
        r4 = subscribe(r4_subscription(f"Patient?family={family}", None, channel_type="websocket"))
        with connect(params["websocket-url"], additional_headers=auth_headers, open_timeout=10) as ws:
            ws.send(f"bind {r4['id']}")
            assert ws.recv(timeout=10) == f"bound {r4['id']}"
            assert http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}).status_code == 201
            deliver()
            assert ws.recv(timeout=10) == f"ping {r4['id']}"
