"""Slot claims: which active Appointment holds which seat of which Slot.

The table `booking_slot_claims` has the primary key (slot_id, seat). A Slot of
capacity one has the single seat 0, so two active Appointments on one Slot
would need two rows with the same key: the database refuses the second insert,
whichever transaction, process or path (REST, Bundle, HL7 v2 SIU) it came from.
A Slot of capacity N (group visits; the `slot-capacity` extension) has seats
0..N-1 and is `busy` once all are claimed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from ...clock import now
from ...errors import FhirError
from ...storage.schema import booking_slot_claims as claims_t

# Appointment.status values that hold their Slots. `proposed` holds only as a
# hold (with an expiry); `fulfilled` keeps the time it used.
HOLDING = frozenset({"proposed", "pending", "booked", "arrived", "checked-in", "fulfilled"})
# Statuses that give the Slots back.
RELEASING = frozenset({"cancelled", "noshow", "entered-in-error", "waitlist"})

CAPACITY_URL = "http://example.org/fhir-server/StructureDefinition/slot-capacity"


def capacity(slot: dict) -> int:
    """Seats of a Slot: the `slot-capacity` extension (positiveInt), default 1."""
    for ext in slot.get("extension") or []:
        if ext.get("url") == CAPACITY_URL and isinstance(ext.get("valuePositiveInt", ext.get("valueInteger")), int):
            return max(1, int(ext.get("valuePositiveInt", ext.get("valueInteger"))))
    return 1


def slot_refs(appointment: dict) -> list[tuple[int, str]]:
    """(index in Appointment.slot, Slot id) of each local Slot reference.

    Raises 422 for a reference that is not `Slot/<id>` on this server."""
    out: list[tuple[int, str]] = []
    for i, ref in enumerate(appointment.get("slot") or []):
        text = (ref or {}).get("reference") or ""
        parts = text.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "Slot" and parts[-1]:
            if "/_history/" in text:
                parts = text.split("/_history/")[0].split("/")
            out.append((i, parts[-1]))
        else:
            raise FhirError.of(422, "processing", f"Appointment.slot[{i}] must reference a Slot on this server (Slot/<id>), not '{text}'", f"Appointment.slot[{i}]")
    return out


def held_by(conn: Connection, appointment_id: str) -> dict[str, list[int]]:
    """Slot id -> seats this Appointment holds."""
    out: dict[str, list[int]] = {}
    rows = conn.execute(select(claims_t.c.slot_id, claims_t.c.seat).where(claims_t.c.appointment_id == appointment_id))
    for slot_id, seat in rows:
        out.setdefault(slot_id, []).append(seat)
    return out


def holders(conn: Connection, slot_id: str) -> list[tuple[int, str, datetime | None]]:
    """(seat, appointment id, hold_until) of every claim on a Slot."""
    rows = conn.execute(
        select(claims_t.c.seat, claims_t.c.appointment_id, claims_t.c.hold_until).where(claims_t.c.slot_id == slot_id)
    )
    return [(r[0], r[1], _utc(r[2])) for r in rows]


def count(conn: Connection, slot_id: str) -> int:
    return conn.execute(select(func.count()).select_from(claims_t).where(claims_t.c.slot_id == slot_id)).scalar_one()


def taken(slot_id: str, index: int, holder: str | None = None) -> FhirError:
    """The 409 a second booking of a Slot gets (expression Appointment.slot[i])."""
    by = f" by Appointment/{holder}" if holder else ""
    return FhirError.of(409, "conflict", f"Slot/{slot_id} is already taken{by}; choose another time", f"Appointment.slot[{index}]")


def claim(conn: Connection, slot_id: str, appointment_id: str, seats: int, index: int, hold_until: datetime | None) -> int:
    """Insert the claim of the lowest free seat; returns the seat.

    Raises 409 when every seat is held. Concurrent claimers of the same seat
    meet at the primary key: PostgreSQL makes the second wait for the first
    and then fails it with a unique violation, which becomes the same 409.
    """
    existing = holders(conn, slot_id)
    used = {seat for seat, _a, _h in existing}
    free = [s for s in range(seats) if s not in used]
    if not free:
        raise taken(slot_id, index, existing[0][1] if existing else None)
    seat = free[0]
    try:
        conn.execute(claims_t.insert().values(slot_id=slot_id, seat=seat, appointment_id=appointment_id,
                                              hold_until=hold_until, created=now()))
    except IntegrityError:
        raise taken(slot_id, index) from None
    except Exception as exc:  # psycopg errors raised outside SQLAlchemy's wrapping
        if type(exc).__name__ in ("UniqueViolation", "IntegrityError"):
            raise taken(slot_id, index) from None
        raise
    return seat


def release(conn: Connection, appointment_id: str, slot_id: str) -> None:
    conn.execute(delete(claims_t).where(claims_t.c.appointment_id == appointment_id, claims_t.c.slot_id == slot_id))


def set_hold(conn: Connection, appointment_id: str, hold_until: datetime | None) -> None:
    conn.execute(update(claims_t).where(claims_t.c.appointment_id == appointment_id).values(hold_until=hold_until))


def expired_holds(conn: Connection, at: datetime, limit: int = 500) -> list[str]:
    """Appointment ids whose hold ended before `at`, in id order (every process
    sweeps: a canonical order keeps their row locks from deadlocking)."""
    rows = conn.execute(
        select(claims_t.c.appointment_id).where(claims_t.c.hold_until.is_not(None), claims_t.c.hold_until <= at)
        .distinct().order_by(claims_t.c.appointment_id).limit(limit)
    )
    return [r[0] for r in rows]


def _utc(dt: datetime | None) -> datetime | None:
    from datetime import timezone

    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
