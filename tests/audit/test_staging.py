"""Read events are staged (one row of facts each) and become indexed AuditEvents when the
server is quiet, when they have waited too long, or before anyone reads the log."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fhir_server.audit import staging
from fhir_server.audit.balp import AuditFacts
from fhir_server.storage.schema import audit_staged, resources
from tests.isolated_db import isolated_database_url


def _staged(db) -> int:
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(audit_staged)).scalar()


def _events(db, marker: str) -> int:
    with db.read() as conn:
        rows = conn.execute(select(resources.c.content).where(resources.c.res_type == "AuditEvent")).all()
    return sum(1 for (content,) in rows if marker.encode() in bytes(content))


@pytest.fixture
def own_app(settings, tmp_path, database_url):
    """A server on a database of its own whose writer thread ticks only when told to
    (flush interval: an hour)."""
    from fhir_server.bootstrap import build_app

    with isolated_database_url(database_url, tmp_path / "staging.sqlite", "staging") as url:
        app = build_app(settings.model_copy(update={"database_url": url, "audit_flush_seconds": 3600.0, "terminology_load": False}))
        yield app
        app.state.audit_writer.close()
        app.state.db.dispose()


def test_facts_round_trip_through_a_staged_row():
    facts = AuditFacts("rest", "read", "R", 200, datetime(2026, 11, 30, 12, 0, 1, 123000, tzinfo=timezone.utc),
                       subject="s", data=[("Patient", "p1/_history/2")], patients=["p1"], query="a=b")
    back, lookup = staging.decode(staging.encode(facts, [("Observation", "o1")]))
    assert back == facts and lookup == [("Observation", "o1")]


def test_a_read_is_staged_then_indexed_before_the_log_is_read(own_app, auth_headers):
    app = own_app
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        writer = app.state.audit_writer
        before = _staged(app.state.db)
        assert c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": "staged-read-1"}).status_code == 200
        assert writer.stage_queued() == 1
        assert _staged(app.state.db) == before + 1 and _events(app.state.db, "staged-read-1") == 0
        # the patient's log asked for: the staged event is indexed first, and found
        bundle = c.get(f"/fhir/AuditEvent?patient=Patient/{pid}&_count=100").json()
        found = [e["resource"] for e in bundle.get("entry", [])
                 if any(x.get("what", {}).get("identifier", {}).get("value") == "staged-read-1" for x in e["resource"].get("entity", []))]
        assert len(found) == 1 and found[0]["subtype"][0]["code"] == "read"
        assert _events(app.state.db, "staged-read-1") == 1


@pytest.mark.parametrize("path", ["/fhir/AuditEvent?outcome=0", "/fhir?_type=AuditEvent", "/fhir/_history",
                                  "/fhir/Patient?_revinclude=AuditEvent:entity", "/fhir/Patient/{pid}/$everything?_type=AuditEvent"])
def test_every_way_of_reading_the_log_indexes_staged_events_first(own_app, auth_headers, path):
    app = own_app
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": "staged-way"})
        app.state.audit_writer.stage_queued()
        assert _staged(app.state.db) >= 1
        assert c.get(path.format(pid=pid)).status_code == 200
        assert _staged(app.state.db) == 0 and _events(app.state.db, "staged-way") >= 1


def test_reads_of_other_things_leave_the_staged_rows_alone(own_app, auth_headers):
    app = own_app
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        c.get(f"/fhir/Patient/{pid}")
        app.state.audit_writer.stage_queued()
        n = _staged(app.state.db)
        assert n >= 1
        assert c.get(f"/fhir/Patient?_id={pid}").status_code == 200
        assert _staged(app.state.db) >= n  # a Patient search is no read of the log: nothing indexed for it


def test_quiet_server_indexes_and_a_busy_one_waits_until_the_lag(own_app, auth_headers, monkeypatch):
    app = own_app
    writer = app.state.audit_writer
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": "staged-busy"})
        writer.stage_queued()
        writer._last_submit = time.monotonic()  # events keep coming: not quiet
        assert writer.catch_up() == 0 and _events(app.state.db, "staged-busy") == 0
        monkeypatch.setattr(staging, "INDEX_LAG_SECONDS", 0.0)  # ...but the rows have waited long enough
        assert writer.catch_up() >= 1 and _events(app.state.db, "staged-busy") == 1
        c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": "staged-quiet"})
        monkeypatch.setattr(staging, "INDEX_LAG_SECONDS", 3600.0)
        writer.stage_queued()
        writer._last_submit = time.monotonic() - staging.QUIET_SECONDS  # nothing for a while: quiet
        assert writer.catch_up() >= 1 and _events(app.state.db, "staged-quiet") == 1
        assert _staged(app.state.db) == 0


def test_staged_rows_outlive_the_writer_and_are_indexed_once_by_concurrent_readers(own_app, auth_headers):
    """A process that stages and dies without closing loses nothing already staged; several
    materializers at once (threads here, processes in production) index each row once."""
    app = own_app
    db = app.state.db
    facts = [AuditFacts("rest", "read", "R", 200, datetime.now(timezone.utc), subject="s", request_id=f"staged-many-{i}",
                        data=[("Patient", "x")]) for i in range(1200)]
    with TestClient(app, base_url="http://testserver", headers=auth_headers):
        with db.write() as conn:
            staging.stage(conn, [staging.encode(f, []) for f in facts])
        errors = []

        def reader():
            try:
                staging.materialize_all(db)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert _staged(db) == 0
        assert _events(db, "staged-many-") == 1200


def test_flush_stages_and_indexes(own_app, auth_headers):
    app = own_app
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": "staged-flush"})
        app.state.audit_writer.flush()
        assert _staged(app.state.db) == 0 and _events(app.state.db, "staged-flush") == 1
