"""Slot integrity: the booking rules every write of an Appointment or a Slot passes.

Two halves, both inside the write's database transaction:

* `check_write` (a write rule, before the resource is stored): an Appointment's
  own rules (start before end; a `booked` one has start, end and a patient;
  its time inside its Slots; its Slots exist and are free for it), and a Slot
  with active Appointments may not be set free or unavailable.
* `on_change` (a change subscriber, after the resource is stored): claims and
  releases Slot seats in `booking_slot_claims` and sets each Slot `busy` or
  `free` to match, so `Slot?status=free` is true at every commit. A delete of
  a Slot that is held is refused (409) and rolls the delete back.

Create, update, patch, transaction Bundles and HL7 v2 SIU (mapped to a
transaction) all pass here, because they all pass the engine's write path.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

from sqlalchemy import Connection

from ... import events
from ...clock import now
from ...errors import FhirError, Issue
from . import claims
from .resources import instant, read, rewrite

HOLD_JOB = "booking.hold-expiry"

# Called after an Appointment's claims are in order: fn(conn, old, new) with
# plain JSON (None for absent). Notifications hook in here.
AppointmentHook = Callable[[Connection, dict | None, dict | None], None]
_hooks: list[AppointmentHook] = []
_settings = None


def configure(settings) -> None:
    global _settings
    _settings = settings


def add_hook(fn: AppointmentHook) -> None:
    if fn not in _hooks:
        _hooks.append(fn)


def hold_minutes() -> int:
    return int(getattr(_settings, "booking_hold_minutes", 10) or 10)


# ----------------------------------------------------------------------------- write rules

def check_write(conn: Connection, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
    if res_type == "Appointment":
        _check_appointment(conn, res_id, resource)
    elif res_type == "Slot" and res_id:
        _check_slot(conn, res_id, resource)
    return []


def _unprocessable(message: str, expression: str) -> FhirError:
    return FhirError.of(422, "business-rule", message, expression)


def _check_appointment(conn: Connection, res_id: str | None, appt: dict) -> None:
    status = appt.get("status")
    start, end = instant(appt.get("start")), instant(appt.get("end"))
    if start and end and not start < end:
        raise _unprocessable("Appointment.start must be before Appointment.end", "Appointment.end")
    if status == "booked":
        if not start or not end:
            raise _unprocessable("A booked Appointment needs a start and an end", "Appointment.start" if not start else "Appointment.end")
        if not any(_is_patient(p.get("actor") or {}) for p in appt.get("participant") or []):
            raise _unprocessable("A booked Appointment needs a participant whose actor is the Patient", "Appointment.participant")
    if status not in claims.HOLDING:
        return
    refs = claims.slot_refs(appt)
    if not refs:
        return
    mine = claims.held_by(conn, res_id) if res_id else {}
    lows, highs = [], []
    for index, slot_id in refs:
        slot = read(conn, "Slot", slot_id)
        if slot is None and status == "proposed":
            continue  # a request naming a Slot we do not have: nothing to hold
        if slot is None:
            raise FhirError.of(422, "not-found", f"Appointment.slot[{index}] references Slot/{slot_id}, which does not exist", f"Appointment.slot[{index}]")
        lows.append(instant(slot.get("start")))
        highs.append(instant(slot.get("end")))
        if slot_id in mine:
            continue
        slot_status = slot.get("status")
        if slot_status == "busy":
            holders = claims.holders(conn, slot_id)
            t = now()
            live = [h for h in holders if h[2] is None or h[2] > t]
            if not holders or len(live) >= claims.capacity(slot):  # stale holds give way (on_change expires them)
                raise claims.taken(slot_id, index, (live or holders)[0][1] if holders else None)
            continue
        if slot_status != "free":
            raise FhirError.of(409, "conflict", f"Slot/{slot_id} is {slot_status} and cannot be booked", f"Appointment.slot[{index}]")
    lo = min((x for x in lows if x), default=None)
    hi = max((x for x in highs if x), default=None)
    if start and lo and start < lo:
        raise _unprocessable(f"Appointment.start {appt.get('start')} is before its Slot starts", "Appointment.start")
    if end and hi and end > hi:
        raise _unprocessable(f"Appointment.end {appt.get('end')} is after its Slot ends", "Appointment.end")


def _is_patient(actor: dict) -> bool:
    """A participant actor that is a Patient: by reference, or by Reference.type."""
    ref = (actor.get("reference") or "").split("/_history")[0]
    return actor.get("type") == "Patient" or ref.rsplit("/", 2)[-2:-1] == ["Patient"]


def _check_slot(conn: Connection, slot_id: str, slot: dict) -> None:
    held = claims.holders(conn, slot_id)
    if not held:
        return
    status = slot.get("status")
    full = len(held) >= claims.capacity(slot)
    if status != "busy" and (full or status != "free"):
        who = ", ".join(f"Appointment/{a}" for _s, a, _h in held[:3])
        raise FhirError.of(409, "conflict", f"Slot/{slot_id} is booked ({who}); cancel or move the Appointment before setting the Slot {status}", "Slot.status")


# ----------------------------------------------------------------------------- change subscriber

def on_change(conn: Connection, change: events.ResourceChange) -> None:
    if change.res_type == "Appointment":
        _sync_appointment(conn, change)
    elif change.res_type == "Slot" and change.method == "delete":
        held = claims.holders(conn, change.res_id)
        if held:
            who = ", ".join(f"Appointment/{a}" for _s, a, _h in held[:3])
            raise FhirError.of(409, "conflict", f"Slot/{change.res_id} cannot be deleted: it is booked ({who})")


def _sync_appointment(conn: Connection, change: events.ResourceChange) -> None:
    appt_id, new = change.res_id, change.new
    status = (new or {}).get("status")
    wanted = claims.slot_refs(new) if new and status in claims.HOLDING else []
    current = claims.held_by(conn, appt_id)
    wanted_ids = {s for _i, s in wanted}
    for slot_id in sorted(set(current) - wanted_ids):
        claims.release(conn, appt_id, slot_id)
        refresh_slot(conn, slot_id)
    hold_until = None
    if status == "proposed":
        hold_until = now() + timedelta(minutes=hold_minutes())
    for index, slot_id in sorted(wanted, key=lambda x: x[1]):  # canonical lock order
        if slot_id in current:
            continue
        slot = read(conn, "Slot", slot_id, for_update=True)
        if slot is None and status == "proposed":
            continue
        if slot is None:
            raise FhirError.of(422, "not-found", f"Appointment.slot[{index}] references Slot/{slot_id}, which does not exist", f"Appointment.slot[{index}]")
        _expire_stale_holds(conn, slot_id)
        claims.claim(conn, slot_id, appt_id, claims.capacity(slot), index, hold_until)
        refresh_slot(conn, slot_id)
    if wanted:
        old_status = (change.old or {}).get("status")
        if status == "proposed" and (old_status != "proposed" or set(current) != wanted_ids):
            claims.set_hold(conn, appt_id, hold_until)
            _schedule_expiry(conn, appt_id, hold_until)
        elif status != "proposed" and old_status == "proposed":
            claims.set_hold(conn, appt_id, None)
    for hook in list(_hooks):
        hook(conn, change.old, new)


def refresh_slot(conn: Connection, slot_id: str) -> None:
    """Make a Slot's status say whether a seat is left (busy <-> free)."""
    n = claims.count(conn, slot_id)

    def change(slot: dict) -> bool:
        full = n >= claims.capacity(slot)
        if full and slot.get("status") != "busy":
            slot["status"] = "busy"
            return True
        if not full and slot.get("status") == "busy":
            slot["status"] = "free"
            return True
        return False

    rewrite(conn, "Slot", slot_id, change)


def _schedule_expiry(conn: Connection, appt_id: str, hold_until) -> None:
    from ...jobs import queue

    queue.enqueue(conn, HOLD_JOB, {"appointment": appt_id}, not_before=hold_until)


def _expire_stale_holds(conn: Connection, slot_id: str) -> None:
    """A hold past its time gives way at once, even if its job has not run yet."""
    t = now()
    for _seat, appt_id, until in claims.holders(conn, slot_id):
        if until is not None and until <= t:
            expire_hold(conn, appt_id)


def expire_hold(conn: Connection, appt_id: str) -> bool:
    """Cancel a `proposed` Appointment whose hold has ended (frees its Slots)."""
    t = now()
    held = [h for s in claims.held_by(conn, appt_id) for h in claims.holders(conn, s) if h[1] == appt_id]
    if not held or any(until is None or until > t for _s, _a, until in held):
        return False

    def cancel(appt: dict) -> bool:
        if appt.get("status") != "proposed":
            return False
        appt["status"] = "cancelled"
        appt["cancelationReason"] = {"text": "The hold on this time expired before it was booked"}
        return True

    return rewrite(conn, "Appointment", appt_id, cancel) is not None
