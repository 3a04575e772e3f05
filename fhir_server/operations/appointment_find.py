"""`Appointment/$find`: proposed Appointments from free Slots (Argonaut Scheduling IG).

GET (or POST with a Parameters body) with:
  start, end        dateTime range the appointment starts in (default: now .. 30 days on)
  practitioner      Reference(Practitioner) — also accepted as `provider`
  location          Reference(Location)
  organization      Reference(Organization): its own Schedules and its Locations'/roles'
  specialty         token (Slot.specialty)
  service-type      token (Slot.serviceType)
  visit-type        token (Slot.appointmentType)
  patient           Reference(Patient): put into the proposals as participant
  _count            at most this many proposals (default 10, max 100)

Returns a searchset Bundle of `proposed` Appointments, earliest first, each
referencing its Slot; none is stored. Slots outside the organisation's online
booking window (lead time, horizon: mappings/booking/rules.yaml) are left out.
The free Slots come from the `booking_slots` index (workflows/booking/slot_index.py):
one range scan on (schedule, status, start) or (status, start).
Errors: 400 for a malformed parameter value.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select

from ..clock import now
from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.interactions import parse_instant
from ..rest.operations import OperationCall, body_parameters, operation
from ..search.engine import find_matches
from ..storage.schema import booking_slots, idx_reference, resources
from ..workflows.booking import windows
from ..workflows.booking.proposals import proposal
from ..workflows.booking.resources import instant
from ..workflows.booking.slot_index import token_pattern

DEFINITION = "http://fhir.org/guides/argonaut/scheduling/OperationDefinition/appointment-find"
MAX_COUNT = 100


def _ref(value: str, rtype: str, name: str) -> str:
    value = value.strip()
    if "/" not in value:
        value = f"{rtype}/{value}"
    if not value.startswith(f"{rtype}/"):
        raise FhirError.of(400, "invalid", f"Parameter '{name}' must reference a {rtype}, not '{value}'", name)
    return value


def _schedules(conn, actors: list[str]) -> list[str]:
    """Ids of the Schedules whose `actor` is one of `actors` (from the reference index)."""
    ref = idx_reference
    conds = [and_(ref.c.target_type == a.split("/")[0], ref.c.target_id == a.split("/")[1]) for a in actors]
    stmt = select(ref.c.res_pk).where(ref.c.res_type == "Schedule", ref.c.param == "actor", or_(*conds))
    q = select(resources.c.res_id, resources.c.content).where(resources.c.pk.in_(stmt), resources.c.deleted.is_(False))
    return sorted(rid for rid, content in conn.execute(q) if jsonio.parse_plain(content).get("active", True) is not False)


@operation("find", ("type",), types=("Appointment",), definition=DEFINITION)
def find(call: OperationCall) -> Outcome:
    params = list(call.params) + body_parameters(call)
    get = lambda n: [v for k, v in params if k == n and v != ""]  # noqa: E731
    t = now()
    start = parse_instant(get("start")[0], "start") if get("start") else t
    end = parse_instant(get("end")[0], "end") if get("end") else start + timedelta(days=30)
    if end <= start:
        raise FhirError.of(400, "invalid", "Parameter 'end' must be after 'start'", "end")
    try:
        count = max(1, min(int((get("_count") or ["10"])[0]), MAX_COUNT))
    except ValueError:
        raise FhirError.of(400, "invalid", "Parameter '_count' must be a number", "_count") from None
    actors = [_ref(v, "Practitioner", "practitioner") for v in get("practitioner") + get("provider")]
    actors += [_ref(v, "Location", "location") for v in get("location")]
    orgs = [_ref(v, "Organization", "organization") for v in get("organization")]
    patient = _ref(get("patient")[0], "Patient", "patient") if get("patient") else None
    filters: list[tuple[str, list[str]]] = []
    for name, prefix in (("specialty", "sp"), ("service-type", "st"), ("visit-type", "vt")):
        for v in get(name):
            filters.append((prefix, [x for x in v.split(",") if x]))
    entries: list[dict] = []
    with call.db.read() as conn:
        schedules = None
        if actors or orgs:
            org_actors = list(orgs)
            for org in orgs:
                for rtype in ("Location", "PractitionerRole", "HealthcareService"):
                    org_actors += [f"{rtype}/{rid}" for _pk, rid in find_matches(conn, rtype, [("organization", org)], limit=1000)]
            schedules = _schedules(conn, actors) if actors else None
            if orgs:
                org_schedules = set(_schedules(conn, org_actors))
                schedules = sorted(org_schedules if schedules is None else set(schedules) & org_schedules)
            if not schedules:
                return _bundle(call, [])
        sched_cache: dict[str, tuple[list[dict], windows.Rules] | None] = {}
        after: tuple | None = None
        for _page in range(20):
            rows = _free_slots(conn, start, end, schedules, filters, after, count * 2)
            slots = [jsonio.parse_plain(content) for _sid, content, _at in rows]  # parsed once
            _read_schedules(conn, call.settings, slots, sched_cache)
            for (slot_id, _content, slot_start), slot in zip(rows, slots):
                after = (slot_start, slot_id)
                sref = (slot.get("schedule") or {}).get("reference") or ""
                known = sched_cache.get(sref.split("/")[-1], False)
                if known is None:
                    continue
                sched_actors, rules = known or ([], windows.rules_for(call.settings, []))
                at = instant(slot.get("start"))
                if at is None or at < t + rules.min_lead or at > t + rules.max_ahead:
                    continue
                entries.append(proposal(slot, sched_actors, patient))
                if len(entries) >= count:
                    return _bundle(call, entries)
            if len(rows) < count * 2:
                break
    return _bundle(call, entries)


def _read_schedules(conn, settings, slots: list[dict], cache: dict) -> None:
    """Schedule id -> (its actors, the booking rules of its organisation), for the
    Schedules of `slots` not yet in `cache` (one query)."""
    wanted = set()
    for slot in slots:
        ref = (slot.get("schedule") or {}).get("reference") or ""
        if ref.startswith("Schedule/") and ref[9:] not in cache:
            wanted.add(ref[9:])
    if not wanted:
        return
    q = select(resources.c.res_id, resources.c.content).where(
        resources.c.res_type == "Schedule", resources.c.res_id.in_(sorted(wanted)), resources.c.deleted.is_(False))
    for sid, content in conn.execute(q):
        sched = jsonio.parse_plain(content)
        if sched.get("active") is False:
            cache[sid] = None  # an inactive Schedule offers nothing
            continue
        rules = windows.rules_for(settings, windows.organizations_of_schedule(conn, sched))
        cache[sid] = ([a for a in sched.get("actor") or [] if a.get("reference")], rules)


def _free_slots(conn, start, end, schedules, filters, after, limit):
    """(slot id, content, start) of free Slots starting in [start, end), earliest first,
    after the keyset `after` = (start, slot id). The ordered, limited scan runs on
    the index alone, then the few rows it keeps are joined to their contents."""
    b, r = booking_slots, resources
    stmt = select(b.c.slot_id, b.c.start).where(b.c.status == "free", b.c.start >= start, b.c.start < end)
    if schedules is not None:
        stmt = stmt.where(b.c.schedule_id.in_(schedules))
    for prefix, values in filters:
        stmt = stmt.where(or_(*[b.c.codes.like(token_pattern(prefix, v)) for v in values]))
    if after is not None:
        stmt = stmt.where(or_(b.c.start > after[0], and_(b.c.start == after[0], b.c.slot_id > after[1])))
    ids = stmt.order_by(b.c.start, b.c.slot_id).limit(limit).subquery()
    q = (select(ids.c.slot_id, r.c.content, ids.c.start)
         .join(r, and_(r.c.res_type == "Slot", r.c.res_id == ids.c.slot_id))
         .where(r.c.deleted.is_(False))
         .order_by(ids.c.start, ids.c.slot_id))
    return [tuple(row) for row in conn.execute(q)]


def _bundle(call: OperationCall, proposals: list[dict]) -> Outcome:
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(proposals),
              "entry": [{"resource": p, "search": {"mode": "match"}} for p in proposals]}
    return Outcome(status=200, body=jsonio.dumps(bundle))
