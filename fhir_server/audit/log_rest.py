"""The RESTful interactions on AuditEvent, answered from the access log (audit.log).

- read, vread (every event has one version, "1"), instance and type history: the rendered
  event; a caller who may not see it gets 404, as for any resource outside their reach;
- create (`POST [base]/AuditEvent`, also in a batch or transaction): an event from another
  audit source (IHE ATNA ITI-20 in its FHIR form), validated like any resource, accepted from
  clients with a `system/` scope only (403 otherwise), and itself logged as a create;
- update, patch, delete: 405 whatever the route (`log.refuse_change`; the log is append-only).
System-level history leaves the log out (it is not part of the record); `AuditEvent/_history`
lists it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlencode

import orjson
from sqlalchemy import Connection, func, select

from ..errors import FhirError
from ..model import jsonio
from ..model.lexical import ascii_int
from ..rest.context import Outcome, RequestContext
from ..rest.interactions import fhir_instant, http_date, parse_instant
from ..security.authz import AccessRequest, authorize
from ..storage.repository import _utc
from ..storage.schema import audit_log
from . import log as audit_log_store
from .log import AUDIT_TYPE, render
from .log_search import visibility_condition, visible

_A = audit_log.c
DEFAULT_COUNT = 50
MAX_COUNT = 1000
_HISTORY_PARAMS = {"_since", "_at", "_count", "_page", "_format", "_pretty"}


def _instant(at: datetime) -> str:
    return fhir_instant(_utc(at))


def _event(conn: Connection, ctx: RequestContext, event_id: str, interaction: str):
    authorize(ctx.principal, AccessRequest(interaction, AUDIT_TYPE, event_id))
    row = conn.execute(select(_A.pk, _A.last_updated, _A.doc).where(_A.id == event_id)).first()
    if row is None or not visible(conn, ctx.access(), ctx.base_url, row.pk):
        raise FhirError.of(404, "not-found", f"AuditEvent/{event_id} is not known")
    from .context import note_patients
    from .log_search import patients_named

    note_patients(patients_named(conn, [row.pk]))
    return row


def read(conn: Connection, ctx: RequestContext, event_id: str) -> Outcome:
    row = _event(conn, ctx, event_id, "read")
    return _outcome(event_id, row.last_updated, render(event_id, bytes(row.doc)), 200)


def vread(conn: Connection, ctx: RequestContext, event_id: str, version: str) -> Outcome:
    row = _event(conn, ctx, event_id, "vread")
    if version != "1":
        raise FhirError.of(404, "not-found", f"Version {version} of AuditEvent/{event_id} is not known (events have one version)")
    return _outcome(event_id, row.last_updated, render(event_id, bytes(row.doc)), 200)


def _outcome(event_id: str, updated: datetime, body: bytes, status: int) -> Outcome:
    return Outcome(status=status, body=body, res_type=AUDIT_TYPE, res_id=event_id, version_id=1,
                   last_modified=http_date(_utc(updated)), last_updated=_instant(updated))


def history(conn: Connection, ctx: RequestContext, event_id: str | None, params: list[tuple[str, str]]) -> bytes:
    """Instance or type history of AuditEvent: each event once, as its creation, newest first."""
    from ..rest.history import _decode_cursor, _encode_cursor

    level = "instance" if event_id else "type"
    authorize(ctx.principal, AccessRequest(f"history-{level}", AUDIT_TYPE, event_id))
    for name, _ in params:
        if name not in _HISTORY_PARAMS and not ctx.lenient:
            raise FhirError.of(400, "not-supported", f"Parameter '{name}' is not supported for history", name)
    args = dict(params)
    conds = []
    if event_id:
        row = _event(conn, ctx, event_id, "history-instance")
        conds.append(_A.pk == row.pk)
    else:
        allowed = visibility_condition(ctx.access(), ctx.base_url)
        if allowed is not None:
            conds.append(allowed)
    if "_since" in args:
        conds.append(_A.last_updated >= parse_instant(args["_since"], "_since"))
    for k, v in params:
        if k == "_at":
            conds.append(_A.last_updated <= parse_instant(v, "_at"))  # an event exists from its writing on
    count = min(ascii_int(args["_count"], "_count"), MAX_COUNT) if "_count" in args else DEFAULT_COUNT
    total = conn.execute(select(func.count()).select_from(audit_log).where(*conds)).scalar_one()
    q = select(_A.pk, _A.id, _A.last_updated, _A.doc).where(*conds)
    if "_page" in args:
        q = q.where(_A.pk < _decode_cursor(args["_page"]))
    rows = conn.execute(q.order_by(_A.pk.desc()).limit(count + 1)).all() if count else []
    has_next, rows = len(rows) > count, rows[:count]
    path = f"{AUDIT_TYPE}/{event_id}/_history" if event_id else f"{AUDIT_TYPE}/_history"
    self_params = [(k, v) for k, v in params if k not in ("_format", "_pretty")]
    links = [{"relation": "self", "url": f"{ctx.base_url}/{path}" + (f"?{urlencode(self_params)}" if self_params else "")}]
    if has_next:
        nxt = [(k, v) for k, v in self_params if k != "_page"] + [("_page", _encode_cursor(rows[-1].pk))]
        links.append({"relation": "next", "url": f"{ctx.base_url}/{path}?{urlencode(nxt)}"})
    entries = [{
        "fullUrl": f"{ctx.base_url}/{AUDIT_TYPE}/{r.id}",
        "resource": orjson.Fragment(render(r.id, bytes(r.doc))),
        "request": {"method": "POST", "url": AUDIT_TYPE},
        "response": {"status": "201 Created", "etag": 'W/"1"', "lastModified": _instant(r.last_updated)},
    } for r in rows]
    return jsonio.dumps({"resourceType": "Bundle", "type": "history", "total": total, "link": links, "entry": entries})


def create(conn: Connection, ctx: RequestContext, event_id: str, resource: dict) -> Outcome:
    """Store an AuditEvent an audit source sent (validated and authorised by the caller);
    only a `system/` scope may (403 otherwise). The create is itself logged."""
    from .writes import audit_source_may_record, log_write

    audit_source_may_record()
    now = datetime.now(timezone.utc)
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    body = {"resourceType": AUDIT_TYPE, "id": event_id, "meta": {"versionId": "1", "lastUpdated": _instant(now), **meta}}
    body.update({k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")})
    content = jsonio.dumps(body)
    audit_log_store.insert(conn, [audit_log_store.entry_of_resource(orjson.loads(content), now)])
    log_write(conn, AUDIT_TYPE, event_id, 1, "create", body)
    return _outcome(event_id, now, content, 201)
