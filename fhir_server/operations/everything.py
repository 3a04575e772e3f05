"""`Patient/{id}/$everything`: the patient, their compartment, and what it refers to.

Compartment membership comes from the reference index (the parameters named by
the Patient CompartmentDefinition), so no resource content is read to decide
it. Pages are keyset-ordered by primary key: `_cursor` in the next link is the
last pk served, which stays correct while resources are added.
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlencode

import orjson
from sqlalchemy import Connection, and_, false, func, select

from ..audit import log_links
from ..errors import FhirError
from ..model.definitions import resource_types
from ..model.lexical import ascii_int
from ..rest.context import Outcome
from ..rest.interactions import parse_instant
from ..rest.operations import OperationCall, body_parameters, operation
from ..search.access import system_condition, type_condition
from ..storage.schema import idx_reference, resources
from . import compartment_ref_condition, patient_compartment

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
MAX_COUNT = 1000
# Referenced resources outside the compartment that make the record readable.
SUPPORTING_TYPES = ("Practitioner", "PractitionerRole", "Organization", "Location", "Medication", "Device", "Substance")




def _int(value: str, name: str) -> int:
    return ascii_int(value, name, maximum=2**62)


def _entry(base: str, res_type: str, res_id: str, content: bytes, mode: str) -> dict:
    return {"fullUrl": f"{base}/{res_type}/{res_id}", "resource": orjson.Fragment(bytes(content)), "search": {"mode": mode}}


@operation("everything", ("instance",), types=("Patient",), definition=DEFINITION)
def everything(call: OperationCall) -> Outcome:
    if call.method not in ("GET", "POST"):
        raise FhirError.of(405, "not-supported", f"$everything does not accept {call.method}")
    pairs = list(call.params) + body_parameters(call)
    since = None
    types: set[str] | None = None
    count = call.settings.default_page_size
    after: int | str | None = None  # None: the first page (it starts with the Patient)
    for name, value in pairs:
        if name == "_since":
            since = parse_instant(value.strip(), "_since").astimezone(timezone.utc)
        elif name == "_type":
            wanted = {t.strip() for t in value.split(",") if t.strip()}
            unknown = sorted(t for t in wanted if t not in resource_types())
            if unknown and not call.ctx.lenient:
                raise FhirError.of(400, "invalid", f"Unknown _type {', '.join(unknown)}", "_type")
            types = (types or set()) | (wanted - set(unknown))
        elif name == "_count":
            count = _int(value, "_count")
        elif name == "_cursor":  # a resource pk, or "e" and an access-log key (AuditEvents come last)
            after = "e" + str(_int(value[1:], "_cursor")) if value.startswith("e") else _int(value, "_cursor")
        elif not call.ctx.lenient:
            raise FhirError.of(400, "not-supported", f"Parameter '{name}' is not supported by $everything (send Prefer: handling=lenient to ignore it)", name)
    count = max(0, min(count, MAX_COUNT))  # _count=0: the total only (R4 search.html, _count)
    base = call.ctx.base_url
    with call.db.read() as conn:
        return Outcome(200, body=_page(conn, call, base, types, since, count, after, pairs))


def _page(conn: Connection, call: OperationCall, base: str, types, since, count: int, after: int | str | None, pairs) -> bytes:
    r = resources.c
    patient = conn.execute(
        select(r.pk, r.res_id, r.content, r.deleted, r.last_updated).where(r.res_type == "Patient", r.res_id == call.res_id)
    ).first()
    if patient is None:
        raise FhirError.of(404, "not-found", f"Patient/{call.res_id} is not known")
    if patient.deleted:
        raise FhirError.of(410, "deleted", f"Patient/{call.res_id} has been deleted")

    # The record, not the log of who read it: AuditEvents (in R4's Patient compartment) come
    # only when _type asks for them; every $everything call would otherwise add to its own answer.
    comp_types = set(patient_compartment()) - {"AuditEvent"} if types is None else set(patient_compartment()) & types
    # AuditEvents are the access log's (audit.log_links), served after the resources, under "e<log key>" cursors
    events = log_links.everything_conditions(call.res_id, call.ctx.access(), base, since) if "AuditEvent" in comp_types else None
    comp_types.discard("AuditEvent")
    first = after is None
    log_after = int(after[1:]) if isinstance(after, str) else None
    after = 0 if log_after is not None or after is None else after
    ref = idx_reference.alias("ref")
    members = select(ref.c.res_pk).where(ref.c.target_id == call.res_id, compartment_ref_condition(comp_types, ref))
    conds = [r.pk.in_(members), r.deleted == false(), r.pk != patient.pk]
    access = call.ctx.access()  # what the caller's scopes let it see, per type, in the query
    allowed = system_condition(access, sorted(comp_types), resources, base)
    if allowed is not None:
        conds.append(allowed)
    if since is not None:
        conds.append(r.last_updated >= since)
    total = conn.execute(select(func.count()).select_from(resources).where(*conds)).scalar() or 0
    include_patient = (types is None or "Patient" in types) and (since is None or _aware(patient.last_updated) >= since)
    total += 1 if include_patient else 0
    total += log_links.count(conn, events) if events is not None else 0
    if count == 0:
        self_url = f"{base}/Patient/{call.res_id}/$everything" + ("?" + urlencode(pairs) if pairs else "")
        return orjson.dumps({"resourceType": "Bundle", "type": "searchset", "total": total,
                             "link": [{"relation": "self", "url": self_url}]})

    rows = [] if log_after is not None else conn.execute(
        select(r.pk, r.res_type, r.res_id, r.content).where(*conds, r.pk > after).order_by(r.pk).limit(count + 1)
    ).all()
    entries = []
    served: set[tuple[str, str]] = set()
    page_pks: list[int] = []
    if first and include_patient:
        entries.append(_entry(base, "Patient", patient.res_id, patient.content, "match"))
        served.add(("Patient", patient.res_id))
        page_pks.append(patient.pk)
        count -= 1  # the patient takes a place on the first page
    more = len(rows) > count
    rows = rows[: max(count, 0)]
    for row in rows:
        entries.append(_entry(base, row.res_type, row.res_id, row.content, "match"))
        served.add((row.res_type, row.res_id))
        page_pks.append(row.pk)
    supporting = _supporting(conn, base, page_pks, served, types, access)
    # more to come: after the page's last resource (or, when the Patient filled the first page, from the start)
    next_cursor = (str(rows[-1].pk) if rows else str(after)) if more else None
    if events is not None and not more:  # the resources are done: the log's events fill the page
        room = max(count, 0) - len(rows)
        found = log_links.page(conn, events, log_after or 0, room + 1)
        if len(found) > room:
            found = found[:room]
            next_cursor = f"e{found[-1].pk if found else log_after or 0}"
        entries += [_entry(base, row.res_type, row.res_id, row.content, "match") for row in found]
    entries += supporting

    params = [(k, v) for k, v in pairs if k != "_cursor"]
    self_url = f"{base}/Patient/{call.res_id}/$everything" + ("?" + urlencode(pairs) if pairs else "")
    links = [{"relation": "self", "url": self_url}]
    if next_cursor is not None:
        links.append({"relation": "next", "url": f"{base}/Patient/{call.res_id}/$everything?" + urlencode(params + [("_cursor", next_cursor)])})
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries}
    return orjson.dumps(bundle)


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


def _supporting(conn: Connection, base: str, page_pks: list[int], served: set, types, access=None) -> list[dict]:
    """Practitioners, organisations, locations, medications... the page refers to."""
    if not page_pks:
        return []
    kinds = [t for t in SUPPORTING_TYPES if types is None or t in types]
    if not kinds:
        return []
    ref = idx_reference.c
    targets = conn.execute(
        select(ref.target_type, ref.target_id).where(ref.res_pk.in_(page_pks), ref.target_type.in_(kinds), ref.target_id.is_not(None)).distinct()
    ).all()
    wanted = [(t, i) for t, i in targets if (t, i) not in served]
    out = []
    r = resources.c
    for t in sorted({t for t, _ in wanted}):
        ids = sorted(i for tt, i in wanted if tt == t)
        cond = type_condition(access, t, "r", resources, base)
        extra = [] if cond is None else [cond]
        for start in range(0, len(ids), 500):
            for row in conn.execute(
                select(r.res_id, r.content).where(and_(r.res_type == t, r.res_id.in_(ids[start : start + 500]), r.deleted == false()), *extra)
            ):
                out.append(_entry(base, t, row.res_id, row.content, "include"))
    return out
