"""Hold expiry: a durable job per hold, plus a sweep in the worker's housekeeping.

`Appointment/$hold` (or any stored `proposed` Appointment on a Slot) claims the
Slot until `booking_hold_minutes` have passed. The job, due at that moment,
cancels the Appointment if it is still `proposed`, which frees the Slot. A
later booking of the Slot also expires a stale hold on the spot, so a stopped
worker never keeps a Slot taken.
"""

from __future__ import annotations

from ...clock import now
from . import claims
from .integrity import HOLD_JOB, expire_hold


def run_hold_job(ctx) -> dict:
    """Job handler: params {"appointment": id}."""
    appt_id = ctx.job.params["appointment"]
    with ctx.db.write() as conn:
        expired = expire_hold(conn, appt_id)
    return {"appointment": appt_id, "expired": expired}


def sweep(db, settings) -> None:
    """Housekeeping: expire every hold whose time has passed.

    Each hold in a transaction of its own: every server process runs this
    sweep, and short transactions taken in id order neither hold many locks
    nor deadlock with another process's sweep; `expire_hold` re-reads the
    Appointment under its row lock, so a hold the other process expired first
    is left alone (one cancellation per hold)."""
    with db.read() as conn:
        due = claims.expired_holds(conn, now())
    for appt_id in due:
        with db.write() as conn:
            expire_hold(conn, appt_id)


def register() -> None:
    from ...jobs import queue

    queue.register_handler(HOLD_JOB, run_hold_job, lease_seconds=60)
    queue.register_housekeeping("booking-holds", sweep)
