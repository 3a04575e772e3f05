"""Booking rules as data (mappings/booking/rules.yaml): when online booking is
open, how soon and how far ahead a time can be booked, when cancelling closes,
and the local time zone — per organisation, with a default.

`check_booking` / `check_cancel` raise 422 (code `business-rule`) with a
message a portal can show as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from sqlalchemy import Connection

from ...clock import now
from ...errors import FhirError
from .resources import instant, read

DEFAULT_FILE = Path(__file__).resolve().parents[3] / "mappings" / "booking" / "rules.yaml"
TIMEZONE_EXT = "http://hl7.org/fhir/StructureDefinition/timezone"


@dataclass(frozen=True)
class Rules:
    timezone: str
    open_from: time
    open_to: time | None  # None = midnight at the end of the day
    min_lead: timedelta
    max_ahead: timedelta
    cancel_deadline: timedelta

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _clock(text: str) -> time | None:
    if str(text) in ("24:00", "24:00:00"):
        return None
    h, m = str(text).split(":")[:2]
    return time(int(h), int(m))


@lru_cache(maxsize=8)
def _table(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}


def _rules(raw: dict) -> Rules:
    hours = raw.get("online_hours") or {}
    return Rules(
        timezone=raw.get("timezone") or "UTC",
        open_from=_clock(hours.get("from", "00:00")) or time(0),
        open_to=_clock(hours.get("to", "24:00")),
        min_lead=timedelta(minutes=int(raw.get("min_lead_minutes") or 0)),
        max_ahead=timedelta(days=int(raw.get("max_days_ahead") or 3650)),
        cancel_deadline=timedelta(hours=float(raw.get("cancel_deadline_hours") or 0)),
    )


def rules_for(settings, org_keys: list[str]) -> Rules:
    """The rules of the first listed organisation among `org_keys`, else the default
    (whose time zone, when the file gives none, is `booking_timezone`)."""
    table = _table(str(getattr(settings, "booking_rules_file", "") or DEFAULT_FILE))
    base = dict(table.get("default") or {})
    base.setdefault("timezone", getattr(settings, "booking_timezone", "UTC"))
    orgs = table.get("organizations") or {}
    for key in org_keys:
        if key in orgs:
            return _rules({**base, **(orgs[key] or {})})
    return _rules(base)


def organizations_of_slot(conn: Connection, slot: dict) -> list[str]:
    """Keys ("Organization/id", "system|value") of the organisations behind a Slot's Schedule."""
    sched_ref = ((slot.get("schedule") or {}).get("reference") or "")
    sched = read(conn, "Schedule", sched_ref.split("/")[-1]) if sched_ref.startswith("Schedule/") else None
    return organizations_of_schedule(conn, sched)


def organizations_of_schedule(conn: Connection, sched: dict | None) -> list[str]:
    """Keys of the organisations behind a Schedule's actors (see organizations_of_slot)."""
    org_refs: list[str] = []
    for actor in (sched or {}).get("actor") or []:
        ref = actor.get("reference") or ""
        rtype, _, rid = ref.partition("/")
        if rtype == "Organization":
            org_refs.append(ref)
        elif rtype in ("Location", "PractitionerRole", "HealthcareService"):
            res = read(conn, rtype, rid) or {}
            org = res.get("managingOrganization") or res.get("organization") or res.get("providedBy") or {}
            if (org.get("reference") or "").startswith("Organization/"):
                org_refs.append(org["reference"])
    keys: list[str] = []
    for ref in org_refs:
        keys.append(ref)
        org = read(conn, "Organization", ref.split("/")[-1]) or {}
        keys.extend(f"{i.get('system')}|{i.get('value')}" for i in org.get("identifier") or [] if i.get("value"))
    return keys


def timezone_of(conn: Connection, appointment: dict, settings) -> ZoneInfo:
    """A Location participant's `timezone` extension, else the organisation's rules, else the default."""
    for p in appointment.get("participant") or []:
        ref = ((p.get("actor") or {}).get("reference") or "")
        if ref.startswith("Location/"):
            loc = read(conn, "Location", ref.split("/")[-1]) or {}
            for ext in loc.get("extension") or []:
                if ext.get("url") == TIMEZONE_EXT and ext.get("valueCode"):
                    return zone(ext["valueCode"])
    for ref in appointment.get("slot") or []:
        slot = read(conn, "Slot", (ref.get("reference") or "").split("/")[-1])
        if slot:
            return rules_for(settings, organizations_of_slot(conn, slot)).zone
    return zone(getattr(settings, "booking_timezone", "UTC"))


def _refuse(message: str, expression: str = "Appointment.start") -> FhirError:
    return FhirError.of(422, "business-rule", message, expression)


def check_booking(rules: Rules, start: datetime) -> None:
    """Online booking of a time starting at `start` (aware) now: open hours, lead time, horizon."""
    t = now()
    local = t.astimezone(rules.zone)
    opens = rules.open_from.strftime("%H:%M")
    closes = rules.open_to.strftime("%H:%M") if rules.open_to else "24:00"
    if local.time() < rules.open_from or (rules.open_to is not None and local.time() >= rules.open_to):
        raise _refuse(f"Online booking is open {opens}-{closes} ({rules.timezone}); it is now {local.strftime('%H:%M')}")
    if start < t + rules.min_lead:
        raise _refuse(f"This time is too soon to book online: book at least {_span(rules.min_lead)} ahead")
    if start > t + rules.max_ahead:
        raise _refuse(f"This time is too far ahead to book online: at most {rules.max_ahead.days} days ahead")


def check_cancel(rules: Rules, start: datetime | None) -> None:
    """Online cancelling (or moving) of an appointment starting at `start`."""
    if start is None or not rules.cancel_deadline:
        return
    if now() > start - rules.cancel_deadline:
        raise _refuse(f"Online cancelling closes {_span(rules.cancel_deadline)} before the appointment; please call the clinic")


def check_for_appointment(conn: Connection, settings, appointment: dict, cancelling: bool = False) -> None:
    """Apply the rules of the appointment's first Slot's organisation."""
    start = instant(appointment.get("start"))
    slot = None
    for ref in appointment.get("slot") or []:
        slot = read(conn, "Slot", (ref.get("reference") or "").split("/")[-1])
        if slot:
            start = start or instant(slot.get("start"))
            break
    rules = rules_for(settings, organizations_of_slot(conn, slot) if slot else [])
    if cancelling:
        check_cancel(rules, start)
    elif start is not None:
        check_booking(rules, start)


def _span(d: timedelta) -> str:
    minutes = int(d.total_seconds() // 60)
    if minutes % (24 * 60) == 0 and minutes >= 48 * 60:
        return f"{minutes // (24 * 60)} days"
    if minutes % 60 == 0 and minutes >= 60:
        return f"{minutes // 60} hour{'s' if minutes > 60 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
