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
    from fhir_server.storage.schema import idx_reference, resources

    def find(request_id: str, flush: bool = True) -> list[dict]:
        if flush:
            app.state.audit_writer.flush()
        r, ref = resources.c, idx_reference.c
        pks = select(ref.res_pk).where(ref.res_type == "AuditEvent", ref.param == "entity", ref.ident_value == request_id)
        with app.state.db.read() as conn:
            rows = conn.execute(select(r.content).where(r.pk.in_(pks))).all()
        return [orjson.loads(row[0]) for row in rows]

    return find


def rid() -> dict[str, str]:
    """Headers giving a request a fresh X-Request-Id (the event's XrequestId entity)."""
    return {"X-Request-Id": "audit-" + uuid.uuid4().hex}


def agent(event: dict, code: str) -> dict:
    return next(a for a in event["agent"] if a["type"]["coding"][0]["code"] == code)


def patients(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if e.get("role", {}).get("code") == "1"}
