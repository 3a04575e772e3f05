"""Confirmations and reminders from the Appointment lifecycle, via fhir_server.notify.

Runs in the Appointment's write transaction (an integrity hook), so a booking
and its CommunicationRequests commit together or not at all:

* becoming `booked`: `appointment-booked` (or `appointment-rescheduled` when
  the booking is the new half of a reschedule), plus a reminder at
  `notify_reminder_hour` local time the day before (unless that has passed);
* a `booked` Appointment moved to another time: `appointment-rescheduled`,
  the old reminder revoked and a new one queued;
* a `booked`/`pending` Appointment cancelled, no-show'n or deleted:
  `appointment-cancelled` (not for the old half of a reschedule), reminder revoked.

Appointments without a Patient participant (by reference) are not notified.
"""

from __future__ import annotations

import contextvars
from datetime import datetime, timedelta

from sqlalchemy import Connection

from ...clock import now
from . import claims
from .resources import instant, read
from .windows import timezone_of

_settings = None
# Set by $book while it books the new half and cancels the old half of a reschedule.
rescheduling: contextvars.ContextVar[bool] = contextvars.ContextVar("booking_rescheduling", default=False)


def configure(settings) -> None:
    global _settings
    _settings = settings


def _patient_ref(appt: dict | None) -> str | None:
    for p in (appt or {}).get("participant") or []:
        ref = ((p.get("actor") or {}).get("reference") or "")
        if ref.startswith("Patient/"):
            return ref.split("/_history")[0]
    return None


def _moved(old: dict, new: dict) -> bool:
    return old.get("start") != new.get("start") or [s.get("reference") for s in old.get("slot") or []] != [
        s.get("reference") for s in new.get("slot") or []]


def on_appointment_change(conn: Connection, old: dict | None, new: dict | None) -> None:
    from ...notify import queue_notification, revoke_by_key

    appt = new or old or {}
    patient = _patient_ref(appt)
    if not patient or read(conn, "Patient", patient.split("/")[-1]) is None or not appt.get("id"):
        return
    ref = f"Appointment/{appt['id']}"
    reminder_key = f"reminder:{ref}"
    before, after = (old or {}).get("status"), (new or {}).get("status")
    if after == "booked" and before != "booked":
        key = "appointment-rescheduled" if rescheduling.get() else "appointment-booked"
        queue_notification(conn, patient, key, _context(conn, new), reason_ref=ref)
        _queue_reminder(conn, patient, new, ref, reminder_key)
    elif after == "booked" and before == "booked" and _moved(old, new):
        revoke_by_key(conn, reminder_key)
        queue_notification(conn, patient, "appointment-rescheduled", _context(conn, new), reason_ref=ref)
        _queue_reminder(conn, patient, new, ref, reminder_key)
    elif before in ("booked", "pending", "arrived", "checked-in") and (new is None or after in claims.RELEASING):
        revoke_by_key(conn, reminder_key)
        if not rescheduling.get():
            queue_notification(conn, patient, "appointment-cancelled", _context(conn, old), reason_ref=ref)


def reminder_time(conn: Connection, appt: dict) -> datetime | None:
    """`notify_reminder_hour` local time on the day before the appointment's local date."""
    start = instant(appt.get("start"))
    if start is None:
        return None
    tz = timezone_of(conn, appt, _settings)
    day_before = start.astimezone(tz).date() - timedelta(days=1)
    hour = int(getattr(_settings, "notify_reminder_hour", 18))
    return datetime(day_before.year, day_before.month, day_before.day, hour, 0, tzinfo=tz)


def _queue_reminder(conn: Connection, patient: str, appt: dict, ref: str, key: str) -> None:
    from ...notify import queue_notification

    when = reminder_time(conn, appt)
    if when is None or when <= now():
        return
    queue_notification(conn, patient, "appointment-reminder", _context(conn, appt), when=when, reason_ref=ref, key=key)


def _context(conn: Connection, appt: dict) -> dict:
    start = instant(appt.get("start"))
    ctx: dict = {}
    if start is not None:
        local = start.astimezone(timezone_of(conn, appt, _settings))
        ctx.update(date=local.strftime("%Y-%m-%d"), time=local.strftime("%H:%M"))
    for p in appt.get("participant") or []:
        actor = p.get("actor") or {}
        ref = actor.get("reference") or ""
        rtype = ref.split("/")[0]
        if rtype in ("Practitioner", "Location") or actor.get("display"):
            name = actor.get("display")
            if not name and rtype in ("Practitioner", "Location"):
                res = read(conn, rtype, ref.split("/")[-1]) or {}
                name = res.get("name") if rtype == "Location" else _human(res)
            if name and rtype == "Location":
                ctx.setdefault("where", name)
            elif name and rtype != "Patient":
                ctx.setdefault("with", name)
    return ctx


def _human(res: dict) -> str | None:
    for n in res.get("name") or []:
        if n.get("text"):
            return n["text"]
        parts = list(n.get("prefix") or []) + list(n.get("given") or []) + ([n["family"]] if n.get("family") else [])
        if parts:
            return " ".join(parts)
    return None
