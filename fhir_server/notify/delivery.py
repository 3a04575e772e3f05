"""Delivering a CommunicationRequest: the `notify.send` job.

For each channel of the request (e-mail, SMS) a row in `notify_deliveries`,
unique per (request, channel), is the idempotency key: it is moved to
`sending` in a committed transaction before the message leaves, and to `sent`
with the Communication that records it afterwards. A channel that is `sent`
or `not-done` is never sent again, whatever job runs for the request. Only a
crash between handing the message over and recording it leaves `sending`
behind; after SENDING_STALE_SECONDS the next attempt resends with the same
idempotency key (SMTP Message-ID, gateway Idempotency-Key), so the receiving
side can recognise the duplicate.

Outcomes: a channel with no address on the Patient, or refused for good, gets
a `not-done` Communication with the reason; a temporary failure retries the
job with back-off (fhir_server.jobs.queue) and, after the last attempt, ends
`not-done`; a channel that is not configured stays `waiting` (the request
stays `active`) and is sent when one is (`requeue_waiting`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..clock import now
from ..rest import internal
from ..storage.schema import notify_deliveries as nd
from . import channels as ch
from .requests import SEND_JOB, channels_of, payload_part

GATEWAY_SYSTEM = "http://example.org/fhir-server/notification-message-id"
SENDING_STALE_SECONDS = 300
FINAL = ("sent", "not-done")


def address_of(patient: dict | None, channel: str) -> str | None:
    """The Patient's e-mail address, or mobile number (telecom `sms`, or `phone` with use `mobile`)."""
    telecom = [t for t in (patient or {}).get("telecom") or [] if t.get("value") and not (t.get("period") or {}).get("end")]
    telecom.sort(key=lambda t: t.get("rank") or 1_000_000)
    if channel == "email":
        found = [t for t in telecom if t.get("system") == "email"]
    else:
        found = [t for t in telecom if t.get("system") == "sms"] + [
            t for t in telecom if t.get("system") == "phone" and t.get("use") == "mobile"]
    return found[0]["value"] if found else None


def _row(conn, request_id: str, channel: str):
    return conn.execute(select(nd).where(nd.c.request_id == request_id, nd.c.channel == channel)).first()


def _ensure_row(db, request_id: str, channel: str, address: str | None):
    with db.write() as conn:
        row = _row(conn, request_id, channel)
        if row is None:
            t = now()
            try:
                with conn.begin_nested():
                    conn.execute(nd.insert().values(request_id=request_id, channel=channel, address=address, state="queued",
                                                    attempts=0, created=t, updated=t))
            except IntegrityError:
                pass
            row = _row(conn, request_id, channel)
        return row


def _set(db, row_id: int, **values) -> None:
    with db.write() as conn:
        conn.execute(update(nd).where(nd.c.id == row_id).values(updated=now(), **values))


def _record(db, cr: dict, channel: str, row_id: int, status: str, address: str | None, message_id: str | None = None,
            reason: str | None = None) -> str:
    """Write the Communication and close the delivery row, in one transaction."""
    text = payload_part(cr, "email" if channel == "email" else "sms")
    comm: dict = {
        "resourceType": "Communication",
        "status": status,
        "basedOn": [{"reference": f"CommunicationRequest/{cr['id']}"}],
        "medium": [m for m in cr.get("medium") or [] if m.get("text") == channel] or None,
        "subject": cr.get("subject"),
        "recipient": cr.get("recipient"),
        "about": cr.get("about"),
        "category": cr.get("category"),
        "payload": [{"contentString": text}] if text else None,
    }
    if cr.get("language"):
        comm["language"] = cr["language"]
    if status == "completed":
        comm["sent"] = now().isoformat(timespec="seconds").replace("+00:00", "Z")
        comm["identifier"] = [{"system": f"{GATEWAY_SYSTEM}/{channel}", "value": message_id}]
        if address:
            comm["note"] = [{"text": f"sent by {channel} to {address}"}]
    else:
        comm["statusReason"] = {"text": reason or "not sent"}
    comm = {k: v for k, v in comm.items() if v}
    with db.write() as conn:
        comm_id = internal.create(conn, comm)
        conn.execute(update(nd).where(nd.c.id == row_id).values(
            state="sent" if status == "completed" else "not-done", message_id=message_id, communication_id=comm_id,
            error=reason, updated=now()))
    return comm_id


def _deliver(ctx, cr: dict, patient: dict | None, channel: str) -> str:
    s = ctx.settings
    address = address_of(patient, channel)
    row = _ensure_row(ctx.db, cr["id"], channel, address)
    if row.state in FINAL:
        return row.state
    if address is None:
        what = "e-mail address" if channel == "email" else "mobile number (telecom sms, or phone with use mobile)"
        _record(ctx.db, cr, channel, row.id, "not-done", None, reason=f"the Patient has no {what}")
        return "not-done"
    unusable = ch.email_configured(s) if channel == "email" else ch.sms_configured(s)
    if unusable:
        _set(ctx.db, row.id, state="waiting", error=unusable)
        return "waiting"
    stale = now() - timedelta(seconds=SENDING_STALE_SECONDS)
    with ctx.db.write() as conn:
        claimed = conn.execute(
            update(nd)
            .where(nd.c.id == row.id, or_(nd.c.state.in_(("queued", "waiting", "failed")),
                                          and_(nd.c.state == "sending", nd.c.updated < stale)))
            .values(state="sending", attempts=nd.c.attempts + 1, address=address, updated=now())
        ).rowcount == 1
    if not claimed:
        return "sending"  # another worker is on it
    key = f"{cr['id']}-{channel}"
    try:
        if channel == "email":
            message_id = ch.send_email(s, address, payload_part(cr, "subject"), payload_part(cr, "email"), key, cr.get("language"))
        else:
            message_id = ch.send_sms(s, address, payload_part(cr, "sms"), key)
    except ch.PermanentFailure as exc:
        _record(ctx.db, cr, channel, row.id, "not-done", address, reason=str(exc))
        return "not-done"
    except ch.TemporaryFailure as exc:
        from ..jobs.queue import MAX_ATTEMPTS

        if ctx.job.attempts >= MAX_ATTEMPTS:
            _record(ctx.db, cr, channel, row.id, "not-done", address, reason=f"gave up after {ctx.job.attempts} attempts: {exc}")
            return "not-done"
        _set(ctx.db, row.id, state="failed", error=str(exc))
        return "retry"
    _record(ctx.db, cr, channel, row.id, "completed", address, message_id=message_id)
    return "sent"


class RetryLater(Exception):
    """A channel failed for now; the job queue retries with back-off."""


def run_send_job(ctx) -> dict:
    """Job handler: params {"request": CommunicationRequest id}."""
    cr_id = ctx.job.params["request"]
    with ctx.db.read() as conn:
        cr = internal.read(conn, "CommunicationRequest", cr_id)
        subject = ((cr or {}).get("subject") or {}).get("reference") or ""
        patient = internal.read(conn, "Patient", subject.split("/")[-1]) if subject.startswith("Patient/") else None
    if cr is None or cr.get("status") != "active":
        return {"request": cr_id, "skipped": (cr or {}).get("status", "absent")}
    outcome = {c: _deliver(ctx, cr, patient, c) for c in channels_of(cr)}
    if "retry" in outcome.values():
        raise RetryLater(f"CommunicationRequest/{cr_id}: " + ", ".join(f"{c} {o}" for c, o in outcome.items()))
    if outcome and all(o in FINAL for o in outcome.values()):
        with ctx.db.write() as conn:
            internal.rewrite(conn, "CommunicationRequest", cr_id, _complete)
    return {"request": cr_id, **outcome}


def _complete(doc: dict) -> bool:
    if doc.get("status") != "active":
        return False
    doc["status"] = "completed"
    return True


def requeue_waiting(db, settings) -> int:
    """Housekeeping: queue again the requests waiting for a channel that is now configured."""
    from ..jobs import queue

    ready = [c for c, why in (("email", ch.email_configured(settings)), ("sms", ch.sms_configured(settings))) if why is None]
    if not ready:
        return 0
    with db.write() as conn:
        ids = [r[0] for r in conn.execute(select(nd.c.request_id).where(nd.c.state == "waiting", nd.c.channel.in_(ready)).distinct())]
        requeued = []
        for request_id in ids:
            # every process runs this sweep: only the one whose UPDATE moved the rows queues the job
            moved = conn.execute(update(nd).where(nd.c.request_id == request_id, nd.c.state == "waiting")
                                 .values(state="queued", updated=now())).rowcount
            if moved:
                queue.enqueue(conn, SEND_JOB, {"request": request_id}, job_id=f"notify-{request_id}-{uuid.uuid4().hex[:8]}")
                requeued.append(request_id)
    if requeued:
        queue.wakeup.set()
    return len(requeued)
