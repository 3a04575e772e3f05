"""Two `fhir-server serve` processes on one database: each reads the other's
writes, and every kind of background work runs exactly once across them.

Covered: exports (kick-off on one process, status and files from the other),
$reindex, the subscription outbox (a real HTTP receiver counts rest-hook
posts), booking hold expiry, appointment confirmations and reminders, and the
notifier's e-mail sends (a real SMTP server, aiosmtpd, counts messages).
Both processes run their background workers; the jobs table shows which
process ran what.

Time: a hold lasts `booking_hold_minutes` and a reminder is due the evening
before the appointment. Rather than wait, the test moves those due times to
now in the database (the only thing it writes there), exactly what the clock
would have done; which process then runs each job is up to the queue.

Runs on the database of the session: a fresh SQLite file (two processes on
one file, one host) or a fresh schema on the session's PostgreSQL.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from fhir_server.clock import now
from fhir_server.storage.database import make_engine
from fhir_server.storage.schema import booking_slot_claims, jobs, notify_deliveries
from tests.subscriptions.conftest import Receiver, topic_subscription
from tests.workflows.booking.helpers import FHIR_JSON, appointment, future, make_schedule, make_slot, post

from tests.isolated_db import isolated_database_url

from .cluster import ServeProcess, wait_for


class Inbox:
    """aiosmtpd handler: every message the SMTP server accepted."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


@pytest.fixture(scope="module")
def shared_db_url(database_url, tmp_path_factory):
    """A database no other test uses (no stray jobs of other tests in its queue)."""
    with isolated_database_url(database_url, tmp_path_factory.mktemp("scale") / "shared.sqlite", "scale") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(shared_db_url, tmp_path_factory, auth_headers):
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    with socket.socket() as sock:  # aiosmtpd's start-up check needs the port before it binds
        sock.bind(("127.0.0.1", 0))
        smtp_port = sock.getsockname()[1]
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    receiver = Receiver()
    shared = tmp_path_factory.mktemp("shared")
    env = {
        "FHIR_SERVER_DATABASE_URL": shared_db_url,
        "FHIR_SERVER_RUN_BACKGROUND_JOBS": "true",
        "FHIR_SERVER_EXPORT_DIR": str(shared / "export"),
        "FHIR_SERVER_BLOB_DIR": str(shared / "blobs"),
        "FHIR_SERVER_NOTIFY_SMTP_HOST": "127.0.0.1",
        "FHIR_SERVER_NOTIFY_SMTP_PORT": str(smtp_port),
        "FHIR_SERVER_SUBSCRIPTION_POLL_SECONDS": "0.1",
        "FHIR_SERVER_TERMINOLOGY_LOAD": "false",
    }
    servers: list[ServeProcess] = []
    engine = None
    try:
        servers.append(ServeProcess(env, auth_headers))
        servers.append(ServeProcess(env, auth_headers))
        engine = make_engine(shared_db_url)
        clients = [httpx.Client(base_url=s.origin, headers=auth_headers, timeout=60) for s in servers]
        yield {"a": clients[0], "b": clients[1], "servers": servers, "inbox": inbox, "receiver": receiver,
               "engine": engine}
        for c in clients:
            c.close()
    finally:
        for s in servers:
            s.stop()
        if engine is not None:
            engine.dispose()
        receiver.stop()
        smtp.stop()


def _job_rows(engine, kind: str | None = None) -> list:
    with engine.connect() as conn:
        q = select(jobs.c.id, jobs.c.kind, jobs.c.state, jobs.c.attempts, jobs.c.lease_owner, jobs.c.error)
        if kind:
            q = q.where(jobs.c.kind == kind)
        return conn.execute(q).all()


def _pid(owner: str | None) -> int | None:
    """worker names are host:pid:random (fhir_server.jobs.runner.worker_name)."""
    return int(owner.split(":")[1]) if owner else None


# ------------------------------------------------------------------ reads and writes


def test_each_process_reads_the_others_writes(cluster):
    a, b = cluster["a"], cluster["b"]
    family = f"Scale{uuid.uuid4().hex[:8]}"
    made = post(a, {"resourceType": "Patient", "name": [{"family": family, "given": ["Ada"]}]})
    r = b.get(f"/fhir/Patient/{made['id']}")
    assert r.status_code == 200 and r.json()["name"][0]["family"] == family
    changed = dict(r.json(), active=True)
    r = b.put(f"/fhir/Patient/{made['id']}", json=changed, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    r = a.get(f"/fhir/Patient/{made['id']}")
    assert r.json()["meta"]["versionId"] == "2" and r.json()["active"] is True
    # a stale If-Match on the first process loses against the second's update
    r = a.put(f"/fhir/Patient/{made['id']}", json=changed, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert r.status_code == 412, r.text
    for i in range(6):
        post(a if i % 2 else b, {"resourceType": "Patient", "name": [{"family": family, "given": [f"P{i}"]}]})
    for c in (a, b):
        bundle = c.get("/fhir/Patient", params={"family": family, "_total": "accurate"}).json()
        assert bundle["total"] == 7
    history = b.get(f"/fhir/Patient/{made['id']}/_history").json()
    assert sorted(e["resource"]["meta"]["versionId"] for e in history["entry"]) == ["1", "2"]


# ------------------------------------------------------------------ subscriptions


def test_subscription_events_are_posted_once_whichever_process_wrote(cluster):
    a, b, receiver = cluster["a"], cluster["b"], cluster["receiver"]
    owner = f"Practitioner/{uuid.uuid4().hex[:12]}"
    r = a.post("/fhir/Subscription", json=topic_subscription("task-status-changed", receiver.url,
                                                             filters=[f"Task?owner={owner}"]))
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    n = 20

    def write(c, count):
        for _ in range(count):
            task = {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}}
            assert c.post("/fhir/Task", json=task).status_code == 201

    threads = [threading.Thread(target=write, args=(c, n // 2)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mine = lambda: [x for x in receiver.notifications()  # noqa: E731
                    if any(p["name"] == "subscription" and p["valueReference"]["reference"].endswith(sub_id)
                           for p in x["bundle"]["entry"][0]["resource"]["parameter"])]
    wait_for(lambda: sum(len(x["numbers"]) for x in mine() if x["type"] == "event-notification") >= n,
             what="rest-hook notifications")
    time.sleep(2.0)  # a second sender would show up now
    numbers = [num for x in mine() if x["type"] == "event-notification" for num in x["numbers"]]
    assert numbers == list(range(1, n + 1))
    assert [x["type"] for x in mine()].count("handshake") == 1
    assert a.delete(f"/fhir/Subscription/{sub_id}").status_code in (200, 204)


# ------------------------------------------------------------------ $export and $reindex


def test_export_kicked_off_on_one_process_is_served_by_the_other(cluster):
    a, b, engine = cluster["a"], cluster["b"], cluster["engine"]
    family = f"Export{uuid.uuid4().hex[:8]}"
    for i in range(5):
        post(b, {"resourceType": "Patient", "name": [{"family": family, "given": [f"E{i}"]}]})
    r = a.get("/fhir/$export", params={"_type": "Patient"}, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
    assert r.status_code == 202, r.text
    status_url = r.headers["Content-Location"]
    job_id = status_url.rsplit("=", 1)[-1] if "=" in status_url else status_url.rstrip("/").rsplit("/", 1)[-1]
    path = status_url.split("/fhir", 1)[1]

    def done():
        resp = b.get("/fhir" + path)
        assert resp.status_code in (200, 202), resp.text
        return resp if resp.status_code == 200 else None

    manifest = wait_for(done, what="export to finish").json()
    exported = []
    for out in manifest["output"]:
        f = b.get("/fhir" + out["url"].split("/fhir", 1)[1], headers={"Accept": "application/fhir+ndjson"})
        assert f.status_code == 200, f.text
        exported += [json.loads(line) for line in f.text.splitlines() if line.strip()]
    assert {x["resourceType"] for x in exported} == {"Patient"}
    assert len([x for x in exported if x["name"][0]["family"] == family]) == 5
    assert len({x["id"] for x in exported}) == len(exported)  # nothing written twice
    (row,) = [j for j in _job_rows(engine, "export") if j.id == job_id or job_id.endswith(j.id)]
    assert row.state == "done" and row.attempts == 1


def test_reindex_kicked_off_on_one_process_runs_once(cluster):
    a, b, engine = cluster["a"], cluster["b"], cluster["engine"]
    r = b.post("/fhir/Patient/$reindex")
    assert r.status_code == 202, r.text
    path = r.headers["Content-Location"].split("/fhir", 1)[1]
    job_id = path.rsplit("=", 1)[-1]
    body = wait_for(lambda: (x := a.get("/fhir" + path)).status_code == 200 and x, what="reindex").json()
    state = {p["name"]: p.get("valueCode") or p.get("valueString") for p in body["parameter"]}
    assert state["state"] == "done", state
    (row,) = [j for j in _job_rows(engine, "reindex") if j.id == job_id]
    assert row.state == "done" and row.attempts == 1


# ------------------------------------------------------------------ booking, holds, notifications


def _hold(c, slot, patient_id):
    proposal = appointment(slot, patient_id, status="proposed")
    params = {"resourceType": "Parameters", "parameter": [{"name": "appt-resource", "resource": proposal}]}
    r = c.post("/fhir/Appointment/$hold", json=params, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    return r.json()["entry"][0]["resource"]


def test_holds_confirmations_and_reminders_run_once(cluster):
    a, b, engine, inbox = cluster["a"], cluster["b"], cluster["engine"], cluster["inbox"]
    before = inbox.count()
    clients = [a, b]
    pract, sched = make_schedule(a)
    n_booked, n_held = 6, 4
    booked, held = [], []
    for i in range(n_booked + n_held):
        c = clients[i % 2]
        patient = post(c, {"resourceType": "Patient", "name": [{"family": "Scale", "given": [f"N{i}"]}],
                           "telecom": [{"system": "email", "value": f"scale{i}-{uuid.uuid4().hex[:6]}@example.org"}]})
        slot = make_slot(c, sched["id"], future(days=8))
        if i < n_booked:
            booked.append(post(clients[(i + 1) % 2], appointment(slot, patient["id"], pract_id=pract["id"])))
        else:
            held.append(_hold(clients[(i + 1) % 2], slot, patient["id"]))
    # confirmations go out at once (one per booking, e-mail only: no SMS gateway configured)
    wait_for(lambda: inbox.count() - before >= n_booked, what="confirmations")
    # time passes: the holds end and the reminders fall due
    t = now() - timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(update(booking_slot_claims).where(booking_slot_claims.c.hold_until.is_not(None)).values(hold_until=t))
        conn.execute(update(jobs).where(jobs.c.state == "scheduled").values(lease_until=t))
    wait_for(lambda: inbox.count() - before >= 2 * n_booked, what="reminders")
    for h in held:
        wait_for(lambda: a.get(f"/fhir/Appointment/{h['id']}").json()["status"] == "cancelled", what="hold expiry")
    time.sleep(3.0)  # anything sent or cancelled twice would show up now
    with inbox.lock:
        mine = inbox.messages[before:]
    assert len(mine) == 2 * n_booked
    assert len({m["Message-ID"] for m in mine}) == len(mine)
    with engine.connect() as conn:
        rows = conn.execute(select(notify_deliveries.c.request_id, notify_deliveries.c.state, notify_deliveries.c.attempts)
                            .where(notify_deliveries.c.channel == "email")).all()
    assert len(rows) == 2 * n_booked and all(r.state == "sent" and r.attempts == 1 for r in rows)
    for h in held:
        versions = b.get(f"/fhir/Appointment/{h['id']}/_history").json()["entry"]
        assert [v["resource"]["status"] for v in versions].count("cancelled") == 1
    for appt in booked:
        assert a.get(f"/fhir/Appointment/{appt['id']}").json()["status"] == "booked"


# ------------------------------------------------------------------ the queue as a whole


def test_every_job_ran_once_and_both_processes_worked(cluster):
    servers, engine = cluster["servers"], cluster["engine"]
    rows = _job_rows(engine)
    assert rows, "the tests above queued jobs"
    unfinished = [r for r in rows if r.state not in ("done",)]
    assert unfinished == [], unfinished
    assert [r for r in rows if r.attempts != 1] == []
    pids = {_pid(r.lease_owner) for r in rows}
    assert pids <= {s.pid for s in servers}
    by_process = {s.pid: sorted(r.kind for r in rows if _pid(r.lease_owner) == s.pid) for s in servers}
    print("jobs run per process:", {pid: len(kinds) for pid, kinds in by_process.items()}, by_process)
    for s in servers:
        assert "Traceback" not in s.output(), s.output()[-3000:]
