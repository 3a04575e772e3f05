"""The $find index: one `booking_slots` row per live Slot (schedule, start, status, codes).

Kept by `on_slot_change`, a change subscriber, in the Slot's own write
transaction — a client's write or the booking rules' busy/free update alike —
so it never disagrees with the Slot resources.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete

from ... import events
from ...storage.schema import booking_slots
from .resources import instant

CODE_FIELDS = (("sp", "specialty"), ("st", "serviceType"), ("vt", "appointmentType"), ("sc", "serviceCategory"))


def _concepts(value) -> list[dict]:
    if isinstance(value, dict):
        return [value]
    return [v for v in value or [] if isinstance(v, dict)]


def code_tokens(slot: dict) -> str:
    """ ' sp:system|code st:system|code ... ' — each coding once with its system and once without."""
    out: list[str] = []
    for prefix, element in CODE_FIELDS:
        for concept in _concepts(slot.get(element)):
            for coding in concept.get("coding") or []:
                code = coding.get("code")
                if code:
                    out.append(f"{prefix}:{coding.get('system') or ''}|{code}")
                    out.append(f"{prefix}:|{code}")
    return " " + " ".join(out) + " "


def token_pattern(prefix: str, value: str) -> str:
    """A search token (`system|code`, `|code` or `code`) as a LIKE pattern over `codes`."""
    value = value.replace("%", "").replace("_", "")
    if "|" not in value:
        return f"% {prefix}:%|{value} %"
    return f"% {prefix}:{value} %"


def row_for(slot_id: str, slot: dict) -> dict:
    sched = ((slot.get("schedule") or {}).get("reference") or "")
    start: datetime | None = instant(slot.get("start"))
    return {"slot_id": slot_id, "schedule_id": sched.split("/")[-1] if sched.startswith("Schedule/") else None,
            "start": start, "status": slot.get("status") or "", "codes": code_tokens(slot)}


def on_slot_change(conn: Connection, change: events.ResourceChange) -> None:
    if change.res_type != "Slot":
        return
    conn.execute(delete(booking_slots).where(booking_slots.c.slot_id == change.res_id))
    if change.new is not None:
        conn.execute(booking_slots.insert().values(**row_for(change.res_id, change.new)))
