"""Bulk Data $export through HTTP, as a client would use it, plus the job queue
under it: kick-off, polling, manifest, downloads, cancellation, expiry, and a
worker crash resumed from its checkpoint without duplicated lines."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text, update

from fhir_server.bootstrap import build_app
from fhir_server.config import Settings
from fhir_server.jobs import queue
from fhir_server.jobs.runner import run_pending
from fhir_server.operations import export, export_job
from fhir_server.storage.schema import jobs

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def fresh_database_url(tmp_path: Path) -> tuple[str, callable]:
    """Exports cover the whole database, so every test gets its own: a SQLite
    file, or a new schema in the PostgreSQL database FHIR_SERVER_DATABASE_URL
    names (a schema, so the test run needs no CREATEDB right)."""
    url = os.environ.get("FHIR_SERVER_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        return "sqlite:///" + str(tmp_path / "t.sqlite"), lambda: None
    admin_url = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = "export_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    return admin_url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False), drop


class Server:
    def __init__(self, tmp_path: Path, auth_headers: dict | None = None, **overrides):
        from tests.conftest import make_token

        auth_headers = auth_headers or {"Authorization": f"Bearer {make_token('system/*.*')}"}
        url, self.drop = fresh_database_url(tmp_path)
        self.settings = Settings(
            database_url=url,
            export_dir=str(tmp_path / "export"),
            run_background_jobs=False,
            **overrides,
        )
        self.app = build_app(self.settings)
        self.db = self.app.state.db
        self.client = TestClient(self.app, headers=auth_headers)

    def create(self, resource: dict) -> str:
        r = self.client.post(f"/fhir/{resource['resourceType']}", json=resource)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def patient(self, family: str = "Doe") -> str:
        return self.create({"resourceType": "Patient", "name": [{"family": family}]})

    def observation(self, pid: str, code: str = "1234-5") -> str:
        return self.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
            }
        )

    def kick_off(self, path: str = "/fhir/$export", **kw) -> str:
        method = kw.pop("method", "GET")
        r = self.client.request(method, path, headers={**ASYNC, **kw.pop("headers", {})}, **kw)
        assert r.status_code == 202, r.text
        loc = r.headers["content-location"]
        assert loc.startswith("http://testserver/fhir/")
        return loc

    def finish(self, status_url: str) -> dict:
        """Poll like a client; the worker is run in-process between polls."""
        for _ in range(10):
            r = self.client.get(status_url)
            if r.status_code == 200:
                assert r.headers["content-type"].startswith("application/json")
                return r.json()
            assert r.status_code == 202, r.text
            assert r.headers["x-progress"] and r.headers["retry-after"]
            run_pending(self.db, self.settings)
        raise AssertionError("export did not finish")

    def download(self, manifest: dict) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for item in manifest["output"]:
            r = self.client.get(item["url"])
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/fhir+ndjson")
            lines = r.content.split(b"\n")
            assert lines[-1] == b""  # every line ends with a newline
            lines = lines[:-1]
            assert len(lines) == item["count"]
            out.setdefault(item["type"], []).extend(json.loads(line) for line in lines)
        return out


    def close(self) -> None:
        self.app.state.audit_writer.close()  # write the access log before its schema goes
        self.db.dispose()
        self.drop()


@pytest.fixture
def server(tmp_path, auth_headers):
    s = Server(tmp_path, auth_headers)
    yield s
    s.close()


def _ids(resources: list[dict]) -> set[str]:
    return {r["id"] for r in resources}


def test_system_export_end_to_end(server):
    patients = [server.patient(f"P{i}") for i in range(3)]
    observations = [server.observation(p) for p in patients for _ in range(4)]
    before = datetime.now(timezone.utc)
    status = server.kick_off()
    r = server.client.get(status)
    assert r.status_code == 202 and r.headers["x-progress"] == "queued"

    manifest = server.finish(status)
    assert manifest["requiresAccessToken"] is True  # the files need the same bearer token
    assert manifest["error"] == []
    assert manifest["request"] == "http://testserver/fhir/$export"
    tx = datetime.fromisoformat(manifest["transactionTime"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= tx <= datetime.now(timezone.utc)
    files = server.download(manifest)
    assert _ids(files["Patient"]) == set(patients)
    assert _ids(files["Observation"]) == set(observations)
    assert len(files["Observation"]) == len(observations)
    # Lines are the stored resources exactly.
    read = server.client.get(f"/fhir/Observation/{observations[0]}")
    item = next(i for i in manifest["output"] if i["type"] == "Observation")
    body = server.client.get(item["url"]).content
    assert read.content + b"\n" in body


def test_type_and_since(server):
    pid = server.patient()
    old = [server.observation(pid) for _ in range(2)]
    time.sleep(0.01)
    since = datetime.now(timezone.utc)
    time.sleep(0.01)
    new = [server.observation(pid) for _ in range(3)]
    server.patient("Later")

    manifest = server.finish(server.kick_off(params={"_type": "Observation", "_since": since.isoformat().replace("+00:00", "Z")}))
    assert [o["type"] for o in manifest["output"]] == ["Observation"]
    files = server.download(manifest)
    assert _ids(files["Observation"]) == set(new)
    assert not set(old) & _ids(files["Observation"])

    # Several types, comma-separated and repeated.
    manifest = server.finish(server.kick_off(params=[("_type", "Observation"), ("_type", "Patient,Observation")]))
    assert {o["type"] for o in manifest["output"]} == {"Observation", "Patient"}
    assert sum(o["count"] for o in manifest["output"]) == 5 + 2


def test_post_kickoff_with_parameters(server):
    pid = server.patient()
    server.observation(pid)
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "_type", "valueString": "Patient"},
        ],
    }
    status = server.kick_off(method="POST", json=params, headers={"Content-Type": "application/fhir+json"})
    files = server.download(server.finish(status))
    assert list(files) == ["Patient"] and _ids(files["Patient"]) == {pid}


@pytest.mark.parametrize(
    "params,headers",
    [
        ({}, {"Prefer": ""}),  # no respond-async
        ({"_outputFormat": "application/fhir+json"}, {}),
        ({"_since": "yesterday"}, {}),
        ({"_type": "NotAType"}, {}),
        ({"_elements": "id"}, {}),
        ({"_typeFilter": "Observation"}, {}),
        ({"_typeFilter": "Observation?_include=Observation:subject"}, {}),
    ],
)
def test_kickoff_rejects(server, params, headers):
    r = server.client.get("/fhir/$export", params=params, headers={**ASYNC, **headers})
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_kickoff_lenient_ignores_unsupported(server):
    server.patient()
    status = server.kick_off(params={"_elements": "id", "_type": "Patient,NotAType"}, headers={"Prefer": "respond-async, handling=lenient"})
    manifest = server.finish(status)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]


@pytest.mark.parametrize("fmt", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
def test_output_formats_accepted(server, fmt):
    server.kick_off(params={"_outputFormat": fmt})


def test_patient_and_group_export(server):
    a, b = server.patient("A"), server.patient("B")
    obs_a = [server.observation(a) for _ in range(2)]
    obs_b = [server.observation(b) for _ in range(3)]
    server.create({"resourceType": "Organization", "name": "Not in any compartment"})
    group = server.create(
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{a}"}}, {"entity": {"reference": f"Patient/{b}"}, "inactive": True}],
        }
    )

    files = server.download(server.finish(server.kick_off("/fhir/Patient/$export")))
    assert _ids(files["Patient"]) == {a, b}
    assert _ids(files["Observation"]) == set(obs_a + obs_b)
    assert "Organization" not in files

    files = server.download(server.finish(server.kick_off(f"/fhir/Group/{group}/$export")))
    assert _ids(files["Patient"]) == {a}
    assert _ids(files["Observation"]) == set(obs_a)

    body = {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": f"Patient/{b}"}}]}
    files = server.download(server.finish(server.kick_off("/fhir/Patient/$export", method="POST", json=body)))
    assert _ids(files["Patient"]) == {b} and _ids(files["Observation"]) == set(obs_b)

    r = server.client.get("/fhir/Group/nope/$export", headers=ASYNC)
    assert r.status_code == 404
    r = server.client.get("/fhir/$export", params={"patient": f"Patient/{a}"}, headers=ASYNC)
    assert r.status_code == 400
    r = server.client.get("/fhir/Patient/$export", params={"_type": "Organization"}, headers=ASYNC)
    assert r.status_code == 400


def test_group_export_with_many_patients_filters_in_python(server, monkeypatch):
    monkeypatch.setattr(export_job, "SQL_PATIENT_LIST_MAX", 1)
    a, b, c = (server.patient(n) for n in "ABC")
    obs = {p: server.observation(p) for p in (a, b, c)}
    group = server.create({"resourceType": "Group", "type": "person", "actual": True, "member": [{"entity": {"reference": f"Patient/{p}"}} for p in (a, b)]})
    files = server.download(server.finish(server.kick_off(f"/fhir/Group/{group}/$export")))
    assert _ids(files["Patient"]) == {a, b}
    assert _ids(files["Observation"]) == {obs[a], obs[b]}


def test_type_filter(server):
    pid = server.patient()
    wanted = [server.observation(pid, "8867-4") for _ in range(2)]
    server.observation(pid, "9279-1")
    other = [server.observation(pid, "2339-0")]
    status = server.kick_off(
        params=[
            ("_type", "Observation,Patient"),
            ("_typeFilter", "Observation?code=http://loinc.org|8867-4"),
            ("_typeFilter", "Observation?code=2339-0"),
        ]
    )
    files = server.download(server.finish(status))
    assert _ids(files["Observation"]) == set(wanted + other)
    assert _ids(files["Patient"]) == {pid}


def test_cancel_before_and_after_completion(server):
    server.patient()
    status = server.kick_off()
    r = server.client.delete(status)
    assert r.status_code == 202
    assert server.client.get(status).status_code == 404
    assert run_pending(server.db, server.settings) == 0  # a cancelled job is never run
    assert server.client.delete(status).status_code == 404

    status = server.kick_off()
    manifest = server.finish(status)
    job_dir = Path(server.settings.export_dir) / status.split("_jobId=")[1]
    assert any(job_dir.iterdir())
    assert server.client.delete(status).status_code == 202
    assert not job_dir.exists()
    assert server.client.get(manifest["output"][0]["url"]).status_code == 404
    assert server.client.get(status).status_code == 404


def test_cancel_while_running_stops_the_worker(server, monkeypatch):
    pid = server.patient()
    for _ in range(5):
        server.observation(pid)
    monkeypatch.setattr(export_job, "BATCH_SIZE", 1)
    monkeypatch.setattr(export_job, "CHECKPOINT_SECONDS", 0)
    status = server.kick_off(params={"_type": "Observation"})
    job_id = status.split("_jobId=")[1]
    job = queue.claim(server.db, ["export"], "w1", 60)
    ctx = queue.JobContext(server.db, server.settings, job, "w1", 60)
    real = ctx.checkpoint
    calls = []

    def checkpoint(cursor, progress=None):
        calls.append(1)
        if len(calls) == 2:  # the client cancels mid-way
            assert server.client.delete(status).status_code == 202
        real(cursor, progress)

    ctx.checkpoint = checkpoint
    with pytest.raises(queue.JobInterrupted):
        export_job.run_export(ctx)
    assert not (Path(server.settings.export_dir) / job_id).exists()
    with server.db.read() as conn:
        assert queue.get(conn, job_id).state == queue.CANCELLED


class Crash(Exception):
    pass


def test_crashed_worker_is_resumed_without_duplicates(server, monkeypatch):
    pid = server.patient()
    obs = [server.observation(pid) for _ in range(11)]
    monkeypatch.setattr(export_job, "BATCH_SIZE", 2)
    monkeypatch.setattr(export_job, "CHECKPOINT_SECONDS", 0)
    monkeypatch.setattr(export_job, "MAX_LINES_PER_FILE", 4)  # several parts, too
    status = server.kick_off(params={"_type": "Observation,Patient"})
    job_id = status.split("_jobId=")[1]

    # Worker 1 claims the job, checkpoints a few times, then dies right after
    # writing a batch it had not yet checkpointed.
    job = queue.claim(server.db, ["export"], "worker-1", lease_seconds=60)
    ctx = queue.JobContext(server.db, server.settings, job, "worker-1", 60)
    real = ctx.checkpoint
    calls = []

    def dying_checkpoint(cursor, progress=None):
        calls.append(1)
        if len(calls) == 4:
            raise Crash()
        real(cursor, progress)

    ctx.checkpoint = dying_checkpoint
    with pytest.raises(Crash):
        export_job.run_export(ctx)

    with server.db.read() as conn:
        saved = queue.get(conn, job_id)
    assert saved.state == queue.RUNNING and saved.cursor["total"] == 6
    job_dir = Path(server.settings.export_dir) / job_id
    on_disk = sum(p.read_bytes().count(b"\n") for p in job_dir.iterdir())
    assert on_disk == 8  # two lines beyond the checkpoint

    # While the lease holds, nobody else can take the job.
    assert queue.claim(server.db, ["export"], "worker-2", 60) is None
    assert server.client.get(status).status_code == 202
    # The lease expires; another worker reclaims and resumes from the cursor.
    with server.db.write() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(lease_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    # Worker 1 was not dead after all, only stalled: it still holds its file open.
    stale_file = next(p for p in job_dir.iterdir() if p.name.startswith("Observation-2"))
    stale = open(stale_file, "ab")
    assert run_pending(server.db, server.settings, owner="worker-2") == 1
    # Its late writes land in a file that is no longer part of the export...
    stale.write(b'{"resourceType":"Observation","id":"stale"}\n')
    stale.close()
    # ...and its lease is gone: it can record no more progress.
    assert not queue.heartbeat(server.db, job_id, "worker-1", 60, {"x": 1})

    manifest = server.finish(status)
    files = server.download(manifest)
    assert sorted(o["id"] for o in files["Observation"]) == sorted(obs)
    assert _ids(files["Patient"]) == {pid}
    assert [o["count"] for o in manifest["output"] if o["type"] == "Observation"] == [4, 4, 3]
    with server.db.read() as conn:
        assert queue.get(conn, job_id).attempts == 2


def test_snapshot_at_transaction_time(server):
    """Changes after the kick-off do not leak into the export: updated resources
    come out as they were, deleted ones are still there, new ones are not."""
    pid = server.patient()
    kept = server.observation(pid)
    changed = server.observation(pid)
    deleted = server.observation(pid)
    status = server.kick_off(params={"_type": "Observation"})
    time.sleep(0.01)
    body = server.client.get(f"/fhir/Observation/{changed}").json()
    body["status"] = "amended"
    assert server.client.put(f"/fhir/Observation/{changed}", json=body).status_code == 200
    assert server.client.delete(f"/fhir/Observation/{deleted}").status_code in (200, 204)
    server.observation(pid)  # created after

    files = server.download(server.finish(status))
    by_id = {o["id"]: o for o in files["Observation"]}
    assert set(by_id) == {kept, changed, deleted}
    assert by_id[changed]["status"] == "final" and by_id[changed]["meta"]["versionId"] == "1"


def test_failed_job_reports_500(server, monkeypatch):
    server.patient()

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export_job._Plan, "rows", broken)
    status = server.kick_off()
    run_pending(server.db, server.settings)
    r = server.client.get(status)  # first attempt failed: waiting to retry
    assert r.status_code == 202 and r.headers["x-progress"].startswith("retrying")
    assert run_pending(server.db, server.settings) == 0  # not before the back-off ends
    monkeypatch.setattr(queue, "RETRY_BACKOFF_SECONDS", 0)
    with server.db.write() as conn:
        conn.execute(update(jobs).values(lease_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    run_pending(server.db, server.settings)  # retried up to MAX_ATTEMPTS, then failed
    r = server.client.get(status)
    assert r.status_code == 500
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "disk on fire" in outcome["issue"][0]["diagnostics"]
    with server.db.read() as conn:
        assert queue.get(conn, status.split("_jobId=")[1]).attempts == queue.MAX_ATTEMPTS


@pytest.fixture
def expiring_server(tmp_path, auth_headers):
    s = Server(tmp_path, auth_headers, export_retention_hours=0)
    yield s
    s.close()


def test_results_expire(expiring_server):
    server = expiring_server
    server.patient()
    status = server.kick_off()
    run_pending(server.db, server.settings)
    job_id = status.split("_jobId=")[1]
    assert server.client.get(status).status_code == 404  # expired at once
    run_pending(server.db, server.settings)  # housekeeping removes files and rows
    assert not (Path(server.settings.export_dir) / job_id).exists()
    with server.db.read() as conn:
        assert queue.get(conn, job_id) is None


def test_unknown_job_and_file(server):
    assert server.client.get("/fhir/$export-poll-status", params={"_jobId": "nope"}).status_code == 404
    assert server.client.get("/fhir/$export-poll-status").status_code == 400
    server.patient()
    status = server.kick_off()
    manifest = server.finish(status)
    url = manifest["output"][0]["url"]
    assert server.client.get(url.rsplit("_file=", 1)[0] + "_file=../../t.sqlite").status_code == 404


def test_background_worker_runs_jobs(tmp_path, auth_headers):
    url, drop = fresh_database_url(tmp_path)
    settings = Settings(database_url=url, export_dir=str(tmp_path / "export"), run_background_jobs=True)
    app = build_app(settings)
    with TestClient(app, headers=auth_headers) as client:
        assert client.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
        status = client.get("/fhir/$export", params={"_type": "Patient"}, headers=ASYNC).headers["content-location"]
        for _ in range(100):
            r = client.get(status)
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()["output"][0]["count"] == 1
    assert not app.state.job_worker.is_alive()
    app.state.db.dispose()
    drop()


def test_queue_claim_lease_and_heartbeat(server):
    with server.db.write() as conn:
        first = queue.enqueue(conn, "export-test", {"n": 1})
        second = queue.enqueue(conn, "export-test", {"n": 2})
    a = queue.claim(server.db, ["export-test"], "a", 60)
    b = queue.claim(server.db, ["export-test"], "b", 60)
    assert (a.id, b.id) == (first, second)
    assert queue.claim(server.db, ["export-test"], "c", 60) is None
    assert queue.heartbeat(server.db, a.id, "a", 60, cursor={"at": 5}, progress="half")
    assert not queue.heartbeat(server.db, a.id, "b", 60)
    assert queue.complete(server.db, a.id, "a", {"ok": True})
    with server.db.read() as conn:
        done = queue.get(conn, a.id)
    assert done.state == queue.DONE and done.cursor == {"at": 5} and done.result == {"ok": True}
    with server.db.write() as conn:
        assert queue.cancel(conn, b.id)
    assert not queue.heartbeat(server.db, b.id, "b", 60)


def test_updates_while_the_export_runs_give_each_resource_once(server, monkeypatch):
    """Every resource once, as of the kick-off, though each is updated between the
    worker's batches (some before their batch was read, some after)."""
    monkeypatch.setattr(export_job, "BATCH_SIZE", 4)
    pid = server.patient()
    obs = [server.observation(pid) for _ in range(18)]
    status = server.kick_off(params={"_type": "Observation"})
    time.sleep(0.01)
    original = export_job._Plan.rows
    rounds = {"n": 0}

    def rows_then_update(self, conn, res_type, *args):
        out = original(self, conn, res_type, *args)
        rounds["n"] += 1
        for oid in obs[rounds["n"] % 3::3] if rounds["n"] <= 4 else []:  # a third of them, different ones each batch
            body = server.client.get(f"/fhir/Observation/{oid}").json()
            body["status"] = "amended"
            assert server.client.put(f"/fhir/Observation/{oid}", json=body).status_code == 200
        return out

    monkeypatch.setattr(export_job._Plan, "rows", rows_then_update)
    files = server.download(server.finish(status))
    ids = [o["id"] for o in files["Observation"]]
    assert len(ids) == len(set(ids)) == len(obs) and set(ids) == set(obs)
    assert {o["meta"]["versionId"] for o in files["Observation"]} == {"1"}
    assert rounds["n"] >= 5
