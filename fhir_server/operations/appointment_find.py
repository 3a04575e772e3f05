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
Errors: 400 for a malformed parameter value.
"""

from __future__ import annotations

from datetime import timedelta

import orjson

from ..clock import now
from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.interactions import parse_instant
from ..rest.operations import OperationCall, body_parameters, operation
from ..search.engine import SearchRequest, execute_search, find_matches
from ..workflows.booking import windows
from ..workflows.booking.proposals import proposal
from ..workflows.booking.resources import fhir_instant, instant, read

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
    ids: set[str] = set()
    for actor in actors:
        ids.update(rid for _pk, rid in find_matches(conn, "Schedule", [("actor", actor), ("active:not", "false")], limit=1000))
    return sorted(ids)


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
    query: list[tuple[str, str]] = [("status", "free"), ("start", f"ge{fhir_instant(start)}"),
                                    ("start", f"lt{fhir_instant(end)}"), ("_sort", "start")]
    for name, sp in (("specialty", "specialty"), ("service-type", "service-type"), ("visit-type", "appointment-type")):
        for v in get(name):
            query.append((sp, v))
    entries: list[dict] = []
    with call.db.read() as conn:
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
            query.append(("schedule", ",".join(f"Schedule/{s}" for s in schedules)))
        sched_cache: dict[str, tuple[list[dict], windows.Rules]] = {}
        page = 0
        seen: set[str] = set()
        while len(entries) < count and page < 20:
            batch = orjson.loads(execute_search(conn, SearchRequest("Slot", query + [("_count", str(count * 2))], call.ctx.base_url)))
            slots = [e["resource"] for e in batch.get("entry") or [] if e.get("resource", {}).get("resourceType") == "Slot"]
            for slot in slots:
                if slot["id"] in seen:
                    continue
                seen.add(slot["id"])
                sref = (slot.get("schedule") or {}).get("reference") or ""
                if sref not in sched_cache:
                    sched = read(conn, "Schedule", sref.split("/")[-1]) or {}
                    rules = windows.rules_for(call.settings, windows.organizations_of_slot(conn, slot))
                    sched_cache[sref] = ([a for a in sched.get("actor") or [] if a.get("reference")], rules)
                sched_actors, rules = sched_cache[sref]
                slot_start = instant(slot.get("start"))
                if slot_start is None or slot_start < t + rules.min_lead or slot_start > t + rules.max_ahead:
                    continue
                entries.append(proposal(slot, sched_actors, patient))
                if len(entries) >= count:
                    break
            nxt = next((l["url"] for l in batch.get("link") or [] if l.get("relation") == "next"), None)
            if not nxt or len(slots) == 0:
                break
            last = slots[-1]["start"]
            query = [q for q in query if not (q[0] == "start" and q[1].startswith("ge"))] + [("start", f"ge{last}")]
            page += 1
    return _bundle(call, entries)


def _bundle(call: OperationCall, proposals: list[dict]) -> Outcome:
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(proposals),
              "entry": [{"resource": p, "search": {"mode": "match"}} for p in proposals]}
    return Outcome(status=200, body=jsonio.dumps(bundle))
