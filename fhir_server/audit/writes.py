"""Writes leave their AuditEvent inside their own transaction; AuditEvents stay as written.

Subscribed to every change (`fhir_server.events`): for a write made on behalf of an API
request (an audit record is open, `audit.context`), one BALP Create/Update/Delete event
is inserted (one row of the log and its few reference rows, `audit.log`) through the
write's own connection, so it commits or rolls back with the
write — nothing to lose in a crash, no event for a write that did not happen.

Only a client holding a `system/` scope (another audit source, as BALP allows an Audit
Record Repository to accept; IHE ATNA ITI-20) may create an AuditEvent; patient and user
tokens get 403 (`audit_source_may_record`, called by audit.log_rest).
In-process writers (loader, jobs) are not API accesses and are not audited here.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Connection

from ..errors import FhirError
from ..events import ResourceChange
from . import log as audit_log
from .balp import AuditFacts
from .context import current, principal_fields
from .store import AUDIT_TYPE, patients_of_resource

_ACTION = {"create": "C", "update": "U", "patch": "U", "delete": "D"}


def audit_source_may_record() -> None:
    """403 unless the request's client is an audit source: a `system/` scope (or an
    unrestricted in-process caller)."""
    record = current()
    principal = record.principal if record is not None else None
    if principal is None or principal.unrestricted:
        return
    if not any(s.startswith("system/") for s in principal.scopes):
        raise FhirError.of(403, "forbidden", "Only an audit source with a system/ scope may record AuditEvents")


def on_change(conn: Connection, change: ResourceChange) -> None:
    """The events subscriber (runs inside the write's transaction)."""
    if change.res_type == AUDIT_TYPE:  # the log's own interactions (audit.log_rest) never get here
        raise FhirError.of(405, "not-supported", "AuditEvents are written to the access log only (POST [base]/AuditEvent)")
    log_write(conn, change.res_type, change.res_id, change.version_id, change.method, change.new or change.old)


def log_write(conn: Connection, res_type: str, res_id: str, version_id: int, method: str, resource: dict | None) -> None:
    """Insert the event of one write of the request being served (none for in-process work)."""
    record = current()
    if record is None:
        return
    principal = record.principal
    facts = AuditFacts(
        kind="rest",
        subtype=method,
        action=_ACTION.get(method, "U"),
        status=201 if method == "create" else 200,
        recorded=datetime.now(timezone.utc),
        client_address=record.client_address,
        acting_for=record.acting_for,
        server_base=record.server_base,
        request_id=record.request_id,
        data=[(res_type, f"{res_id}/_history/{version_id}")],
        patients=patients_of_resource(res_type, resource),
        **principal_fields(principal),
    )
    audit_log.insert(conn, [audit_log.entry_of_facts(facts)])
    record.writes_audited += 1
