"""The access-log writer in a child process (`FHIR_SERVER_AUDIT_WRITER=process`, the
default on PostgreSQL), with the thread writer's contract."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import select


def _events(db, marker: str) -> list[dict]:
    from .conftest import logged_events

    return [e for e in logged_events(db) if marker in orjson.dumps(e).decode()]


def _settings(settings, database_url, tmp_path, **extra):
    url = database_url if database_url.startswith("postgresql") else f"sqlite:///{tmp_path / 'procw.sqlite'}"
    return settings.model_copy(update={"database_url": url, "audit_writer": "process", "terminology_load": False, **extra})


def test_events_are_written_by_a_child_process_on_flush_and_at_shutdown(settings, database_url, auth_headers, tmp_path):
    from fhir_server.audit.process_writer import ProcessAuditWriter
    from fhir_server.bootstrap import build_app

    app = build_app(_settings(settings, database_url, tmp_path, audit_flush_seconds=3600.0))
    writer = app.state.audit_writer
    assert isinstance(writer, ProcessAuditWriter)
    marker = "procw-" + uuid.uuid4().hex[:8]
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        for i in range(3):
            assert c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": f"{marker}-a{i}"}).status_code == 200
        child = writer._child
        assert child is not None and child.is_alive() and child.pid != os.getpid()
        time.sleep(0.3)
        assert _events(app.state.db, marker) == []  # in the child's buffer: its interval is an hour
        assert writer.flush() >= 0
        first = _events(app.state.db, marker)
        assert len(first) == 3
        assert all(e["entity"][0]["what"]["reference"] == f"Patient/{pid}" for e in first)  # the patient is named
        for i in range(4):
            assert c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": f"{marker}-b{i}"}).status_code == 200
    assert len(_events(app.state.db, marker)) == 7  # the rest written at shutdown
    assert writer._child is None and not child.is_alive()


def test_auto_is_a_process_and_a_thread_for_an_in_memory_database(settings, tmp_path):
    from fhir_server.audit import make_writer
    from fhir_server.audit.process_writer import ProcessAuditWriter
    from fhir_server.audit.writer import AuditWriter
    from fhir_server.storage.database import Database

    auto = settings.model_copy(update={"audit_writer": "auto"})
    lite = Database(f"sqlite:///{tmp_path / 'auto.sqlite'}")
    pg = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected: the choice is by URL
    memory = Database("sqlite://")
    try:
        assert type(make_writer(lite, auto)) is ProcessAuditWriter
        assert type(make_writer(pg, auto)) is ProcessAuditWriter
        assert type(make_writer(memory, auto)) is AuditWriter
        assert type(make_writer(lite, settings.model_copy(update={"audit_writer": "process"}))) is ProcessAuditWriter
        assert type(make_writer(pg, settings.model_copy(update={"audit_writer": "thread"}))) is AuditWriter
        assert type(make_writer(memory, settings.model_copy(update={"audit_writer": "process"}))) is AuditWriter
    finally:
        for db in (lite, pg, memory):
            db.dispose()


def test_the_child_leaves_when_the_server_process_dies(settings, database_url, tmp_path):
    """A server killed without shutdown leaves no writer process behind; what the child
    held is still written (it writes before it goes)."""
    s = _settings(settings, database_url, tmp_path, audit_flush_seconds=3600.0)
    if not database_url.startswith("postgresql"):
        from fhir_server.storage.database import Database
        from fhir_server.storage.migrate import upgrade

        db = Database(s.database_url)
        upgrade(db.engine)
        db.dispose()
    marker = "orphan-" + uuid.uuid4().hex[:8]
    script = textwrap.dedent(f"""
        import os, sys, time
        from datetime import datetime, timezone
        from fhir_server.audit.balp import AuditFacts
        from fhir_server.audit.process_writer import ProcessAuditWriter
        w = ProcessAuditWriter({s.database_url!r}, flush_seconds=3600.0)
        w.submit(AuditFacts(kind="rest", subtype="read", action="R", status=200, recorded=datetime.now(timezone.utc),
                            request_id={marker!r}, data=[("Patient", "x")]))
        time.sleep(0.5)
        print(w._child.pid, flush=True)
        os._exit(1)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    child_pid = int(out.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(child_pid):
        time.sleep(0.1)
    assert not _alive(child_pid), "the writer process outlived the server"
    from fhir_server.storage.database import Database

    db = Database(s.database_url)
    try:
        assert len(_events(db, marker)) == 1
    finally:
        db.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped by its dead parent's init yet) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_a_killed_writer_process_is_replaced(settings, database_url, auth_headers, tmp_path):
    from fhir_server.bootstrap import build_app

    app = build_app(_settings(settings, database_url, tmp_path))
    writer = app.state.audit_writer
    marker = "respawn-" + uuid.uuid4().hex[:8]
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        assert c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": f"{marker}-0"}).status_code == 200
        writer.flush()
        first = writer._child
        first.kill()
        first.join(10)
        deadline = time.monotonic() + 15
        n = 1
        while time.monotonic() < deadline and (writer._child is None or writer._child is first):
            assert c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": f"{marker}-{n}"}).status_code == 200
            n += 1
            time.sleep(0.1)
        assert writer._child is not None and writer._child is not first and writer._child.is_alive()
        assert c.get(f"/fhir/Patient/{pid}", headers={"X-Request-Id": f"{marker}-last"}).status_code == 200
        writer.flush()
        assert any(e for e in _events(app.state.db, f"{marker}-last"))
