"""A slow endpoint does not let a second worker send the same events: the
lease on a subscription is renewed while its queue is being served."""

from __future__ import annotations

import threading
import time
import uuid

from fhir_server.subscriptions import delivery
from fhir_server.subscriptions.delivery import Deliverer, HttpSender

from .conftest import loopback_only, topic_subscription


def test_slow_endpoint_each_event_sent_once_by_two_workers(client, subscribe, receiver, app, settings, monkeypatch):
    monkeypatch.setattr(delivery, "LEASE_SECONDS", 1)
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    subscribe(topic_subscription("task-status-changed", receiver.url, filters=[f"Task?owner={owner}"], max_count=1))
    http = loopback_only(HttpSender())

    def slow(request, timeout):  # 6 notifications x 0.4 s: well past the 1 s lease
        time.sleep(0.4)
        http(request, timeout)

    for _ in range(6):
        task = {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}}
        assert client.post("/fhir/Task", json=task).status_code == 201
    first = Deliverer(app.state.db, settings, send=slow, owner="worker-a")
    second = Deliverer(app.state.db, settings, send=slow, owner="worker-b")
    t = threading.Thread(target=first.run_once)
    t.start()
    time.sleep(0.2)
    deadline = time.time() + 3.0
    while time.time() < deadline:  # the other process's rounds, at a short poll
        second.run_once()
        time.sleep(0.1)
    t.join()
    assert receiver.event_numbers() == [1, 2, 3, 4, 5, 6]
