"""Delivery across crashes and across server processes sharing one database."""

from __future__ import annotations

import threading
import time
import uuid

import httpx

from fhir_server.subscriptions.delivery import Deliverer

from fhir_server.subscriptions.delivery import HttpSender

from .conftest import loopback_only, topic_subscription


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for deliveries")
        time.sleep(0.1)


def _task(base: str, headers: dict, owner: str, status: str = "requested") -> str:
    task = {"resourceType": "Task", "status": status, "intent": "order", "owner": {"reference": owner}}
    r = httpx.post(f"{base}/Task", json=task, headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_killed_between_commit_and_delivery_delivers_after_restart(server_processes, receiver, auth_headers):
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    # a worker that delivers once at start-up and then sleeps an hour: every
    # event below is committed and not yet delivered when the process dies
    first = server_processes(FHIR_SERVER_SUBSCRIPTION_POLL_SECONDS=3600)
    sub = topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"], content="id-only")
    r = httpx.post(f"{first.base}/Subscription", json=sub, headers=auth_headers, timeout=30)
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    ids = [_task(first.base, auth_headers, owner) for _ in range(5)]
    time.sleep(0.5)
    assert receiver.requests == []
    first.kill()

    second = server_processes(FHIR_SERVER_SUBSCRIPTION_POLL_SECONDS=0.1)
    try:
        _wait_for(lambda: len(receiver.event_numbers()) >= 5)
        time.sleep(1.0)  # anything sent twice would show up now
        notes = receiver.notifications()
        assert notes[0]["type"] == "handshake"
        assert receiver.event_numbers() == [1, 2, 3, 4, 5]
        focus = [e["fullUrl"].rsplit("/", 1)[1] for n in notes[1:] for e in n["bundle"]["entry"][1:]]
        assert focus == ids
    finally:
        httpx.delete(f"{second.base}/Subscription/{sub_id}", headers=auth_headers, timeout=30)


def test_two_processes_deliver_each_event_once_in_order(server_processes, receiver, auth_headers):
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    a = server_processes(FHIR_SERVER_SUBSCRIPTION_POLL_SECONDS=0.05)
    b = server_processes(FHIR_SERVER_SUBSCRIPTION_POLL_SECONDS=0.05)
    sub = topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"], content="id-only")
    r = httpx.post(f"{a.base}/Subscription", json=sub, headers=auth_headers, timeout=30)
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    try:
        n = 30
        errors: list[str] = []

        def write(base: str, count: int) -> None:
            for _ in range(count):
                try:
                    _task(base, auth_headers, owner)
                except AssertionError as exc:
                    errors.append(str(exc))

        threads = [threading.Thread(target=write, args=(srv.base, n // 2)) for srv in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        _wait_for(lambda: len(receiver.event_numbers()) >= n)
        time.sleep(1.0)
        assert receiver.event_numbers() == list(range(1, n + 1))
    finally:
        httpx.delete(f"{a.base}/Subscription/{sub_id}", headers=auth_headers, timeout=30)


def test_concurrent_workers_share_the_queue_without_sending_twice(client, subscribe, receiver, app, settings):
    """Several claimers at once (threads here; FOR UPDATE SKIP LOCKED on PostgreSQL)."""
    owners = [f"Practitioner/{uuid.uuid4().hex[:12]}" for _ in range(4)]
    for owner in owners:
        subscribe(topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"]))
    for i in range(24):
        task = {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owners[i % 4]}}
        assert client.post("/fhir/Task", json=task).status_code == 201
    workers = [Deliverer(app.state.db, settings, send=loopback_only(HttpSender())) for _ in range(3)]
    threads = [threading.Thread(target=w.run_once) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_sub: dict[str, list[int]] = {}
    for note in receiver.notifications():
        ref = [p for p in note["bundle"]["entry"][0]["resource"]["parameter"] if p["name"] == "subscription"][0]
        per_sub.setdefault(ref["valueReference"]["reference"], []).extend(note["numbers"])
    assert sorted(len(v) for v in per_sub.values()) == [6, 6, 6, 6]
    assert all(v == [1, 2, 3, 4, 5, 6] for v in per_sub.values())
