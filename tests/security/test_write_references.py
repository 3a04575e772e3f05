"""A restricted token cannot point a write into another record (a message into another
patient's visit chat), cannot send as the care unit, and $chat-poll shows only what the
caller may read."""

from __future__ import annotations

import pytest

from tests.conftest import make_token


def _as(pid: str, scope: str = "patient/*.cruds") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(scope, patient=pid)}"}


@pytest.fixture(scope="module")
def visits(app, auth_headers):
    from fastapi.testclient import TestClient

    with TestClient(app, headers=auth_headers) as c:
        ann = c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Ann"}]}).json()["id"]
        bob = c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Bob"}]}).json()["id"]

        def task(pid):
            return c.post("/fhir/Task", json={"resourceType": "Task", "status": "requested", "intent": "order",
                                              "for": {"reference": f"Patient/{pid}"}}).json()["id"]

        return {"ann": ann, "bob": bob, "ann_task": task(ann), "bob_task": task(bob)}


def _message(subject: str, task: str, sender: str | None = None, text: str = "hello") -> dict:
    body = {"resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{subject}"},
            "partOf": [{"reference": f"Task/{task}"}], "payload": [{"contentString": text}]}
    if sender:
        body["sender"] = {"reference": sender}
    return body


def test_a_message_into_another_patients_visit_is_refused(anonymous_client, visits):
    v = visits
    r = anonymous_client.post("/fhir/Communication", json=_message(v["ann"], v["bob_task"]), headers=_as(v["ann"]))
    assert r.status_code == 403, r.text
    assert "Communication.partOf[0].reference" in r.text
    ok = anonymous_client.post("/fhir/Communication", json=_message(v["ann"], v["ann_task"], f"Patient/{v['ann']}"), headers=_as(v["ann"]))
    assert ok.status_code == 201, ok.text


def test_a_patient_cannot_send_as_the_care_unit(anonymous_client, visits):
    v = visits
    r = anonymous_client.post("/fhir/Communication", json=_message(v["ann"], v["ann_task"], "Organization/care-unit-central"),
                              headers=_as(v["ann"]))
    assert r.status_code == 403 and "Communication.sender" in r.text
    # staff (a system or user token) do send as the care unit
    staff = {"Authorization": f"Bearer {make_token('system/*.*')}"}
    assert anonymous_client.post("/fhir/Communication", json=_message(v["ann"], v["ann_task"], "Organization/care-unit-central"),
                                 headers=staff).status_code == 201


def test_chat_poll_shows_only_messages_the_caller_may_read(anonymous_client, visits):
    v = visits
    staff = {"Authorization": f"Bearer {make_token('system/*.*')}"}
    mine = anonymous_client.post("/fhir/Communication", json=_message(v["bob"], v["bob_task"], text="for bob"), headers=staff).json()["id"]
    stray = anonymous_client.post("/fhir/Communication", json=_message(v["ann"], v["bob_task"], text="ann's record"), headers=staff).json()["id"]
    r = anonymous_client.get(f"/fhir/Task/{v['bob_task']}/$chat-poll", headers=_as(v["bob"], "patient/*.rs"))
    assert r.status_code == 200, r.text
    ids = {e["resource"]["id"] for e in r.json()["entry"]}
    assert mine in ids and stray not in ids
    everything = anonymous_client.get(f"/fhir/Task/{v['bob_task']}/$chat-poll", headers=staff).json()
    assert {mine, stray} <= {e["resource"]["id"] for e in everything["entry"]}
