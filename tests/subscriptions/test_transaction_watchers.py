"""Which subscriptions a transaction's writes are events for is asked once per resource type
and transaction (subscriptions.matching._watchers), and a Subscription written inside the
transaction is seen by the writes after it."""

from __future__ import annotations

import uuid

from sqlalchemy import event, select

from fhir_server.subscriptions.tables import subscription_events

from .conftest import r4_subscription


def _post(resource: dict, full_url: str | None = None) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _watcher_queries(engine) -> list[str]:
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_a):
        if "FROM subscription_types t JOIN subscriptions" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    return seen


def _queued(app, sub_id: str) -> list[str]:
    with app.state.db.read() as conn:
        return [r.res_id for r in conn.execute(select(subscription_events.c.res_id)
                                               .where(subscription_events.c.sub_id == sub_id,
                                                      subscription_events.c.kind == "event-notification"))]


def test_a_transaction_asks_for_watchers_once_per_type_and_notifies_every_match(client, app, subscribe, receiver):
    family = "Tx" + uuid.uuid4().hex[:8]
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url))
    seen = _watcher_queries(app.state.db.engine)
    entries = [_post({"resourceType": "Patient", "name": [{"family": family}]}) for _ in range(6)]
    entries += [_post({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}) for _ in range(4)]
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.text
    ids = [e["response"]["location"].split("/")[1] for e in r.json()["entry"][:6]]
    assert len(seen) == 2  # Patient and Observation, not one per entry
    assert sorted(_queued(app, sub["id"])) == sorted(ids)
    # the next transaction asks again: what is held lives as long as its transaction
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries[:2]})
    assert r.status_code == 200 and len(seen) == 3


def test_a_subscription_written_in_the_transaction_sees_the_writes_after_it(client, app, subscriptions_made, receiver):
    family = "Tx" + uuid.uuid4().hex[:8]
    entries = [
        _post({"resourceType": "Patient", "name": [{"family": family}]}),
        _post(r4_subscription(f"Patient?family={family}", receiver.url)),
        _post({"resourceType": "Patient", "name": [{"family": family}]}),
    ]
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.text
    before, sub_id, after = (e["response"]["location"].split("/")[1] for e in r.json()["entry"])
    subscriptions_made.append(sub_id)
    assert _queued(app, sub_id) == [after]  # the first Patient was written before the Subscription existed
    assert before != after
