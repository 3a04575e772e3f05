"""Helpers for the access-log tests: find the AuditEvents a request left behind."""

from __future__ import annotations

import uuid

import orjson
import pytest
from sqlalchemy import select


@pytest.fixture
def audit_events(app):
    """audit_events(request_id) -> the AuditEvents (dicts) whose request id entity is
    `request_id`, after writing what the buffer holds."""
    from fhir_server.audit.log import ROLE_ENTITY_ID, render
    from fhir_server.storage.schema import audit_log, audit_log_refs

    def find(request_id: str, flush: bool = True) -> list[dict]:
        if flush:
            app.state.audit_writer.flush()
        a, ref = audit_log.c, audit_log_refs.c
        pks = select(ref.event_pk).where(ref.value == request_id, ref.roles.op("&")(ROLE_ENTITY_ID) != 0)
        with app.state.db.read() as conn:
            rows = conn.execute(select(a.id, a.doc).where(a.pk.in_(pks)).order_by(a.pk)).all()
        return [orjson.loads(render(row.id, bytes(row.doc))) for row in rows]

    return find


def logged_events(db) -> list[dict]:
    """Every event of the access log in `db`, as a read answers it (small test databases only)."""
    from fhir_server.audit.log import render
    from fhir_server.storage.schema import audit_log

    with db.read() as conn:
        rows = conn.execute(select(audit_log.c.id, audit_log.c.doc).order_by(audit_log.c.pk)).all()
    return [orjson.loads(render(row.id, bytes(row.doc))) for row in rows]


def log_insert(db, events: list) -> None:
    """Write `events` (AuditFacts) to the log of `db` as the batch writer does."""
    from fhir_server.audit.log import entry_of_facts, insert

    with db.write() as conn:
        insert(conn, [entry_of_facts(f) for f in events])


def rid() -> dict[str, str]:
    """Headers giving a request a fresh X-Request-Id (the event's XrequestId entity)."""
    return {"X-Request-Id": "audit-" + uuid.uuid4().hex}


def agent(event: dict, code: str) -> dict:
    return next(a for a in event["agent"] if a["type"]["coding"][0]["code"] == code)


def patients(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if e.get("role", {}).get("code") == "1"}
