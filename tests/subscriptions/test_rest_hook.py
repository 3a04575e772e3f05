"""R4 criteria subscriptions over rest-hook, delivered to a real local HTTP receiver."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from fhir_server.security import authz
from fhir_server.subscriptions.secrets import unseal
from fhir_server.subscriptions.tables import subscription_events, subscriptions

from .conftest import r4_subscription


def _family() -> str:
    return "Subs" + uuid.uuid4().hex[:8]


def _patient(client, family: str, **extra) -> dict:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}], **extra})
    assert r.status_code == 201, r.text
    return r.json()


# ------------------------------------------------------------------ creation


def test_create_activates_and_masks_header_secrets(client, subscribe, receiver, app):
    sub = subscribe(r4_subscription(f"Patient?family={_family()}", receiver.url, headers=["Authorization: Bearer s3cret-token"]))
    assert sub["status"] == "active"
    assert sub["channel"]["header"] == ["Authorization: ***"]
    read = client.get(f"/fhir/Subscription/{sub['id']}").json()
    assert "s3cret" not in json.dumps(read)
    history = client.get(f"/fhir/Subscription/{sub['id']}/_history").text
    assert "s3cret" not in history
    # PUT back what was read: the secret held is kept, not replaced by the mask
    read["reason"] = "changed"
    assert client.put(f"/fhir/Subscription/{sub['id']}", json=read).status_code == 200
    with app.state.db.read() as conn:
        spec = json.loads(conn.execute(select(subscriptions.c.spec).where(subscriptions.c.id == sub["id"])).scalar())
        assert "s3cret" not in json.dumps(spec)  # sealed at rest (test_secrets.py)
        assert unseal(conn, spec)["headers"] == ["Authorization: Bearer s3cret-token"]


@pytest.mark.parametrize("criteria", ["Patient?nonsense=1", "NotAType?x=1", "just words", "Patient?birthdate=notadate"])
def test_invalid_criteria_is_400_and_nothing_written(client, subscribe, receiver, criteria):
    before = client.get("/fhir/Subscription", params={"_summary": "count"}).json()["total"]
    out = subscribe(r4_subscription(criteria, receiver.url), expect=400)
    assert out["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Subscription", params={"_summary": "count"}).json()["total"] == before


def test_channel_checks(subscribe, receiver):
    bad_type = r4_subscription("Patient?family=x", receiver.url)
    bad_type["channel"]["type"] = "email"
    assert subscribe(bad_type, expect=400)["issue"][0]["expression"] == ["Subscription.channel.type"]
    bad_payload = r4_subscription("Patient?family=x", receiver.url, payload="text/plain")
    subscribe(bad_payload, expect=400)
    refused = subscribe(r4_subscription("Patient?family=x", "http://receiver.invalid/hook"), expect=422)
    assert "https" in refused["issue"][0]["diagnostics"]
    subscribe(r4_subscription("Patient?family=x", "ftp://127.0.0.1/x"), expect=400)
    assert subscribe(r4_subscription("Patient?family=x", "https://receiver.invalid/hook"))["status"] == "active"


def test_allow_list_admits_plain_http_host(settings):
    from fhir_server.errors import FhirError
    from fhir_server.subscriptions.spec import check_endpoint

    check_endpoint("http://receiver.internal/hook", {"receiver.internal"}, False)
    check_endpoint("http://[::1]:8080/hook", set(), True)
    with pytest.raises(FhirError) as err:
        check_endpoint("http://127.0.0.1/hook", set(), False)
    assert err.value.status == 422


# ------------------------------------------------------------------ matching and delivery


def test_matching_and_not_matching_changes(client, subscribe, receiver, deliver):
    family = _family()
    subscribe(r4_subscription(f"Patient?family={family}&gender=female", receiver.url))
    _patient(client, family, gender="female")
    _patient(client, family, gender="male")  # does not match
    _patient(client, _family(), gender="female")  # does not match
    deliver()
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    assert req["method"] == "POST" and req["path"] == "/hook" and req["body"] == b""


def test_payload_sends_the_version_that_matched(client, subscribe, receiver, deliver):
    family = _family()
    subscribe(r4_subscription(f"Patient?family={family}", receiver.url, payload="application/fhir+json",
                              headers=["X-Api-Key: k1"]))
    p = _patient(client, family, gender="female")
    # changed again before delivery: the first event still carries version 1
    p2 = dict(p, gender="male")
    assert client.put(f"/fhir/Patient/{p['id']}", json=p2).status_code == 200
    # and no longer matching: no event for this version
    p3 = dict(p2, name=[{"family": "Other" + family}])
    client.put(f"/fhir/Patient/{p['id']}", json=p3)
    deliver()
    assert [r["method"] for r in receiver.requests] == ["PUT", "PUT"]
    assert receiver.requests[0]["path"] == f"/hook/Patient/{p['id']}"
    assert receiver.requests[0]["headers"]["x-api-key"] == "k1"
    assert receiver.requests[0]["headers"]["content-type"] == "application/fhir+json"
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    assert [b["meta"]["versionId"] for b in bodies] == ["1", "2"]
    assert [b["gender"] for b in bodies] == ["female", "male"]


def test_delete_of_a_matching_resource_is_an_event(client, subscribe, receiver, deliver):
    family = _family()
    subscribe(r4_subscription(f"Patient?family={family}", receiver.url, payload="application/fhir+json"))
    p = _patient(client, family)
    other = _patient(client, _family())
    assert client.delete(f"/fhir/Patient/{p['id']}").status_code == 200
    assert client.delete(f"/fhir/Patient/{other['id']}").status_code == 200
    deliver()
    assert [(r["method"], r["path"]) for r in receiver.requests] == [("PUT", f"/hook/Patient/{p['id']}"), ("DELETE", f"/hook/Patient/{p['id']}")]


def test_rolled_back_write_queues_nothing(client, subscribe, receiver, deliver, app):
    family = _family()
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": family}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "name": [{"family": family}]},
         "request": {"method": "PUT", "url": "Patient/p-" + family, "ifMatch": 'W/"7"'}},
    ]}
    assert client.post("/fhir", json=bundle).status_code >= 400
    with app.state.db.read() as conn:
        rows = conn.execute(select(subscription_events).where(subscription_events.c.sub_id == sub["id"])).all()
    assert rows == []
    deliver()
    assert receiver.requests == []


def test_order_per_subscription(client, subscribe, receiver, deliver):
    family = _family()
    subscribe(r4_subscription(f"Patient?family={family}", receiver.url, payload="application/fhir+json"))
    p = _patient(client, family, birthDate="2000-01-01")
    for day in range(2, 12):
        p = client.put(f"/fhir/Patient/{p['id']}", json=dict(p, birthDate=f"2000-01-{day:02d}")).json()
    deliver()
    versions = [int(json.loads(r["body"])["meta"]["versionId"]) for r in receiver.requests]
    assert versions == list(range(1, 12))


def test_failing_endpoint_backs_off_goes_to_error_and_recovers(client, subscribe, receiver, deliver, app):
    family = _family()
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url, payload="application/fhir+json"))
    receiver.status = 503
    first = _patient(client, family)
    fast = dict(subscription_retry_base_seconds=0.0, subscription_retry_max_seconds=0.0, subscription_max_failures=3)
    for _ in range(3):
        deliver(**fast)
    with app.state.db.read() as conn:
        row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub["id"])).first()
    assert row.failures == 3 and "503" in row.last_error
    current = client.get(f"/fhir/Subscription/{sub['id']}").json()
    assert current["status"] == "error" and "503" in current["error"]
    status = client.get(f"/fhir/Subscription/{sub['id']}/$status").json()["entry"][0]["resource"]
    assert {p["name"]: p for p in status["parameter"]}["status"]["valueCode"] == "error"
    # events keep being queued while in error, and wait in order
    second = _patient(client, family)
    # back-off: with a real delay the next attempt is not due yet
    deliver(subscription_retry_base_seconds=60.0, subscription_retry_max_seconds=60.0)
    receiver.status = 200
    deliver(subscription_retry_base_seconds=60.0)
    assert receiver.requests == []  # not due yet
    with app.state.db.write() as conn:  # fast-forward the back-off
        conn.execute(subscriptions.update().where(subscriptions.c.id == sub["id"]).values(next_attempt=None))
    deliver()
    assert [r["path"] for r in receiver.requests] == [f"/hook/Patient/{first['id']}", f"/hook/Patient/{second['id']}"]
    assert client.get(f"/fhir/Subscription/{sub['id']}").json()["status"] == "active"
    with app.state.db.read() as conn:
        assert conn.execute(select(subscriptions.c.failures).where(subscriptions.c.id == sub["id"])).scalar() == 0


def test_deleted_or_off_subscription_gets_nothing(client, subscribe, receiver, deliver):
    family = _family()
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url))
    off = dict(client.get(f"/fhir/Subscription/{sub['id']}").json(), status="off")
    assert client.put(f"/fhir/Subscription/{sub['id']}", json=off).json()["status"] == "off"
    _patient(client, family)
    deliver()
    assert receiver.requests == []


class RefuseFamily:
    """A policy under which the anonymous principal may not read Patients of one family."""

    def __init__(self, family: str):
        self.family = family

    def check(self, principal, request):
        if request.interaction == "read" and request.res_type == "Patient" and request.resource:
            if any(n.get("family") == self.family for n in request.resource.get("name", [])):
                return "not yours"
        return None


def test_owner_who_may_not_see_a_resource_hears_nothing_of_it(client, subscribe, receiver, deliver):
    hidden, shown = _family(), _family()
    subscribe(r4_subscription("Patient?gender=other", receiver.url, payload="application/fhir+json"))
    authz.set_policies([authz.AllowAll(), RefuseFamily(hidden)])
    try:
        _patient(client, hidden, gender="other")
        _patient(client, shown, gender="other")
        deliver()
    finally:
        authz.set_policies([authz.AllowAll()])
    families = [json.loads(r["body"])["name"][0]["family"] for r in receiver.requests]
    assert families == [shown]


def test_visibility_rechecked_at_delivery(client, subscribe, receiver, deliver, app):
    family = _family()
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url, payload="application/fhir+json"))
    _patient(client, family)  # visible when written
    authz.set_policies([authz.AllowAll(), RefuseFamily(family)])
    try:
        deliver()  # no longer visible when sent
    finally:
        authz.set_policies([authz.AllowAll()])
    assert receiver.requests == []
    with app.state.db.read() as conn:
        statuses = conn.execute(select(subscription_events.c.status).where(subscription_events.c.sub_id == sub["id"])).scalars().all()
    assert statuses == ["withheld"]


def test_subscription_end_stops_events(client, subscribe, receiver, deliver):
    family = _family()
    ended = r4_subscription(f"Patient?family={family}", receiver.url)
    ended["end"] = "2001-01-01T00:00:00Z"
    subscribe(ended)
    running = r4_subscription(f"Patient?family={family}", receiver.url + "/running")
    running["end"] = "2999-01-01T00:00:00Z"
    subscribe(running)
    bad = r4_subscription(f"Patient?family={family}", receiver.url)
    bad["end"] = "yesterday"
    subscribe(bad, expect=400)
    _patient(client, family)
    deliver()
    assert [r["path"] for r in receiver.requests] == ["/hook/running"]


def test_back_off_doubles_per_failure_up_to_the_cap(client, subscribe, receiver, deliver, app):
    """next try = base * 2**(failures-1), capped: 10, 20, 40, 80, then 100 (the cap)."""
    from datetime import datetime, timezone

    family = _family()
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url))
    receiver.status = 503
    _patient(client, family)
    waits = []
    for _ in range(5):
        with app.state.db.write() as conn:  # make the retry due now
            conn.execute(subscriptions.update().where(subscriptions.c.id == sub["id"]).values(next_attempt=None))
        before = datetime.now(timezone.utc)
        deliver(subscription_retry_base_seconds=10.0, subscription_retry_max_seconds=100.0, subscription_max_failures=99)
        with app.state.db.read() as conn:
            due = conn.execute(select(subscriptions.c.next_attempt).where(subscriptions.c.id == sub["id"])).scalar()
        due = due if due.tzinfo else due.replace(tzinfo=timezone.utc)
        waits.append(round((due - before).total_seconds()))
    assert waits == [10, 20, 40, 80, 100]
    assert receiver.requests == []
