"""Writes leave their AuditEvent inside their own transaction; AuditEvents stay as written.

Subscribed to every change (`fhir_server.events`): for a write made on behalf of an API
request (an audit record is open, `audit.context`), one BALP Create/Update/Delete event
is inserted through the write's own connection, so it commits or rolls back with the
write — nothing to lose in a crash, no event for a write that did not happen.

The same hook keeps the log honest: an AuditEvent cannot be updated, patched or deleted
(405, whatever the route: instance, conditional, batch or transaction entry), and only a
client holding a `system/` scope (another audit source, as BALP allows an Audit Record
Repository to accept; IHE ATNA ITI-20) may create one; patient and user tokens get 403.
In-process writers (loader, jobs) are not API accesses and are not audited here.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Connection

from ..errors import FhirError
from ..events import ResourceChange
from .balp import AuditFacts, to_resource
from .context import current, principal_fields
from .store import AUDIT_TYPE, insert_events, patients_of_resource

_ACTION = {"create": "C", "update": "U", "patch": "U", "delete": "D"}


def guard_audit_event(change: ResourceChange) -> None:
    if change.method != "create":
        raise FhirError.of(405, "not-supported", f"AuditEvents cannot be changed or deleted ({change.method} refused): the access log is append-only")
    record = current()
    principal = record.principal if record is not None else None
    if principal is None or principal.unrestricted:
        return
    if not any(s.startswith("system/") for s in principal.scopes):
        raise FhirError.of(403, "forbidden", "Only an audit source with a system/ scope may record AuditEvents")


def on_change(conn: Connection, change: ResourceChange) -> None:
    """The events subscriber (runs inside the write's transaction)."""
    if change.res_type == AUDIT_TYPE:
        guard_audit_event(change)
    record = current()
    if record is None:
        return
    principal = record.principal
    facts = AuditFacts(
        kind="rest",
        subtype=change.method,
        action=_ACTION.get(change.method, "U"),
        status=201 if change.method == "create" else 200,
        recorded=datetime.now(timezone.utc),
        client_address=record.client_address,
        acting_for=record.acting_for,
        server_base=record.extra.get("server_base", ""),
        request_id=record.request_id,
        data=[(change.res_type, f"{change.res_id}/_history/{change.version_id}")],
        patients=patients_of_resource(change.res_type, change.new or change.old),
        **principal_fields(principal),
    )
    insert_events(conn, [to_resource(facts)])
    record.writes_audited += 1
