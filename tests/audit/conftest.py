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
    from fhir_server.storage.schema import resources

    def find(request_id: str, flush: bool = True) -> list[dict]:
        if flush:
            app.state.audit_writer.flush()
        r = resources.c
        with app.state.db.read() as conn:
            rows = conn.execute(select(r.content).where(r.res_type == "AuditEvent", r.content.like(f"%{request_id}%"))).all()
        out = [orjson.loads(row[0]) for row in rows]
        return [e for e in out if any((x.get("what") or {}).get("identifier", {}).get("value") == request_id for x in e.get("entity", []))]

    return find


def rid() -> dict[str, str]:
    """Headers giving a request a fresh X-Request-Id (the event's XrequestId entity)."""
    return {"X-Request-Id": "audit-" + uuid.uuid4().hex}


def agent(event: dict, code: str) -> dict:
    return next(a for a in event["agent"] if a["type"]["coding"][0]["code"] == code)


def patients(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if e.get("role", {}).get("code") == "1"}
