"""Buffered events survive a graceful shutdown; retention and the NDJSON export."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient
from sqlalchemy import select


def _count(db, like: str = "") -> int:
    """AuditEvents in `db` whose JSON contains `like` (the small per-test databases only)."""
    from .conftest import logged_events

    return sum(1 for e in logged_events(db) if like in json.dumps(e, ensure_ascii=False))


def test_buffered_read_events_survive_a_graceful_shutdown(settings, auth_headers, tmp_path):
    from fhir_server.bootstrap import build_app

    s = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'shutdown.sqlite'}", "audit_flush_seconds": 3600.0,
                                    "terminology_load": False})
    app = build_app(s)
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        for i in range(5):
            assert c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": f"shutdown-{i}"}).status_code == 200
        assert app.state.audit_writer.pending() == 5  # held in memory: the flush interval is an hour
        assert _count(app.state.db, "shutdown-") == 0
    assert app.state.audit_writer.pending() == 0
    assert _count(app.state.db, "shutdown-") == 5  # written at shutdown


def _old_event(days_ago: int) -> dict:
    from fhir_server.audit.balp import AuditFacts

    when = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return AuditFacts("rest", "read", "R", 200, when, subject=f"retention-{days_ago}", data=[("Patient", "x")])


def test_retention_job_deletes_old_events(settings, tmp_path):
    from fhir_server.audit import retention
    from .conftest import log_insert
    from fhir_server.bootstrap import build_app
    from fhir_server.jobs.runner import run_pending

    s = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'retention.sqlite'}", "audit_retention_days": 30,
                                    "terminology_load": False})
    app = build_app(s)
    db = app.state.db
    log_insert(db, [_old_event(400), _old_event(31), _old_event(29), _old_event(0)])
    job_id = retention.enqueue_due(db, s)
    assert job_id and retention.enqueue_due(db, s) is None  # once per hour, however many workers
    run_pending(db, s, kinds=[retention.KIND])
    assert _count(db, "retention-400") == 0 and _count(db, "retention-31") == 0
    assert _count(db, "retention-29") == 1 and _count(db, "retention-0") == 1
    with TestClient(app, base_url="http://testserver", headers={"Authorization": "Bearer x"}) as c:
        pass  # the app still starts on the cleaned database
    off = s.model_copy(update={"audit_retention_days": 0})
    assert retention.enqueue_due(db, off) is None


def test_audit_export_cli_writes_ndjson(settings, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from .conftest import log_insert
    from fhir_server.bootstrap import build_app
    from fhir_server.cli import app as cli

    url = f"sqlite:///{tmp_path / 'export.sqlite'}"
    s = settings.model_copy(update={"database_url": url, "terminology_load": False})
    app = build_app(s)
    log_insert(app.state.db, [_old_event(10), _old_event(5), _old_event(1)])
    monkeypatch.setenv("FHIR_SERVER_DATABASE_URL", url)
    since = (datetime.now(timezone.utc) - timedelta(days=7)).date().isoformat()
    result = CliRunner().invoke(cli, ["audit", "export", "--since", since])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    events = [json.loads(ln) for ln in lines]
    assert {e["agent"][0]["altId"] for e in events} == {"retention-5", "retention-1"}
    assert all(e["resourceType"] == "AuditEvent" for e in events)
    result = CliRunner().invoke(cli, ["audit", "export", "--until", "not-a-date"])
    assert result.exit_code == 2
