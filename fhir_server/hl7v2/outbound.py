"""Outbound HL7 v2: SIU^S12/S13/S15 from Appointment changes, via a durable outbox.

The events subscriber runs inside the write's transaction and only inserts
hl7_outbox rows, so a message exists if and only if the change committed.
deliver_pending() sends them over MLLP with exponential back-off; per
(destination, appointment) only the oldest undelivered message is ever in
flight, so a receiver never sees S13 before the S12 it modifies.  All state is
in the database, so nothing is lost across restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable

from hl7apy.core import Message as HL7Message
from sqlalchemy import Connection, Engine, select, update

from fhir_server import events
from fhir_server.storage.schema import hl7_outbox

from .ack import new_control_id, parse_ack, ts
from .er7 import escape
from .inbound import applying_inbound, write_conn
from .listener import send_mllp

log = logging.getLogger(__name__)

# FHIR Appointment.status -> SCH-25 filler status (HL7 table 0278), the IG map reversed.
_STATUS_TO_V2 = {"pending": "Pending", "waitlist": "Waitlist", "booked": "Booked", "checked-in": "Started",
                 "arrived": "Started", "fulfilled": "Complete", "cancelled": "Cancelled",
                 "entered-in-error": "Deleted", "noshow": "Noshow", "proposed": "Pending"}
_EVENT_TEXT = {"S12": "New appointment booking", "S13": "Appointment rescheduling", "S14": "Appointment modification",
               "S15": "Appointment cancellation"}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def v2_ts(instant: str | None) -> str:
    """FHIR dateTime/instant -> HL7 DTM with offset."""
    if not instant:
        return ""
    if len(instant) <= 10:
        return instant.replace("-", "")
    dt = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    out = dt.strftime("%Y%m%d%H%M%S")
    return out + (dt.strftime("%z") if dt.tzinfo else "")


def _e(v) -> str:
    return escape(str(v)) if v not in (None, "") else ""


def _cwe(cc: dict | None) -> str:
    if not cc:
        return ""
    c = (cc.get("coding") or [{}])[0]
    return "^".join([_e(c.get("code")), _e(c.get("display") or cc.get("text")), _e(c.get("system"))]).rstrip("^")


def _ident_of(res: dict | None) -> list[dict]:
    return [i for i in (res or {}).get("identifier", []) if i.get("value")]


def build_siu(
    appointment: dict,
    trigger: str,
    *,
    control_id: str | None = None,
    sending_application: str = "FHIR-SERVER",
    sending_facility: str = "",
    receiving_application: str = "",
    receiving_facility: str = "",
    resolve: Callable[[str], dict | None] | None = None,
    now: datetime | None = None,
) -> str:
    """SIU^<trigger> (v2.5, structure SIU_S12) for an Appointment dict, built with hl7apy.

    `resolve("Patient/1")` may return the referenced resource so that PID/AIP/AIL
    carry identifiers and names rather than only the server id.
    """
    resolve = resolve or (lambda ref: None)
    m = HL7Message("SIU_S12", version="2.5")
    m.msh.msh_3 = _e(sending_application)
    if sending_facility:
        m.msh.msh_4 = _e(sending_facility)
    if receiving_application:
        m.msh.msh_5 = _e(receiving_application)
    if receiving_facility:
        m.msh.msh_6 = _e(receiving_facility)
    m.msh.msh_7 = ts(now)
    m.msh.msh_9 = f"SIU^{trigger}^SIU_S12"
    m.msh.msh_10 = control_id or new_control_id()
    m.msh.msh_11 = "P"
    m.msh.msh_12 = "2.5"

    sch = m.add_segment("SCH")
    placer = [i for i in _ident_of(appointment)
              if any(c.get("code") == "PLAC" for c in (i.get("type") or {}).get("coding", []))]
    if placer:
        sch.sch_1 = f"{_e(placer[0]['value'])}^^{_e(placer[0].get('system'))}^URI" if placer[0].get("system") \
            else _e(placer[0]["value"])
    if appointment.get("id"):
        sch.sch_2 = f"{_e(appointment['id'])}^{_e(sending_application)}"
    sch.sch_6 = f"{trigger}^{_EVENT_TEXT.get(trigger, trigger)}^HL70276"
    if appointment.get("reasonCode"):
        sch.sch_7 = _cwe(appointment["reasonCode"][0])
    if appointment.get("appointmentType"):
        sch.sch_8 = _cwe(appointment["appointmentType"])
    minutes = appointment.get("minutesDuration")
    start, end = appointment.get("start"), appointment.get("end")
    if minutes is None and start and end:
        delta = datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))
        minutes = int(delta.total_seconds() // 60)
    if minutes is not None:
        sch.sch_9 = str(minutes)
        sch.sch_10 = "min^minutes^UCUM"
    if start or end:
        sch.sch_11 = f"^^^{v2_ts(start)}^{v2_ts(end)}"
    status = _STATUS_TO_V2.get(appointment.get("status", ""), "")
    if status:
        sch.sch_25 = f"{status}^{status}^HL70278"
    if start or end:
        tq1 = m.add_segment("TQ1")
        tq1.tq1_1 = "1"
        if start:
            tq1.tq1_7 = v2_ts(start)
        if end:
            tq1.tq1_8 = v2_ts(end)
    if appointment.get("comment"):
        nte = m.add_segment("NTE")
        nte.nte_1 = "1"
        nte.nte_3 = _e(appointment["comment"])

    parts = appointment.get("participant", [])
    patients = [p for p in parts if (p.get("actor") or {}).get("reference", "").startswith("Patient/")]
    for p in patients[:1]:
        ref = p["actor"]["reference"]
        res = resolve(ref) or {}
        grp = m.add_group("SIU_S12_PATIENT")
        pid = grp.add_segment("PID")
        pid.pid_1 = "1"
        reps = [f"{_e(i['value'])}^^^&{_e(i.get('system', ''))}&URI" for i in _ident_of(res)]
        reps.append(f"{_e(ref.split('/', 1)[1])}^^^{_e(sending_application)}^PI")
        pid.pid_3 = "~".join(reps)
        name = (res.get("name") or [{}])[0]
        display = p["actor"].get("display", "")
        if name:
            pid.pid_5 = f"{_e(name.get('family'))}^{_e(' '.join(name.get('given', [])))}"
        elif display:
            pid.pid_5 = _e(display)
        if res.get("birthDate"):
            pid.pid_7 = res["birthDate"].replace("-", "")
        if res.get("gender"):
            pid.pid_8 = {"male": "M", "female": "F", "other": "O", "unknown": "U"}[res["gender"]]

    res_grp = m.add_group("SIU_S12_RESOURCES")
    rgs = res_grp.add_segment("RGS")
    rgs.rgs_1 = "1"
    rgs.rgs_2 = "A"
    svc = res_grp.add_group("SIU_S12_SERVICE")
    ais = svc.add_segment("AIS")
    ais.ais_1 = "1"
    service = (appointment.get("serviceType") or [None])[0] or appointment.get("appointmentType")
    ais.ais_3 = _cwe(service) or "APPT^Appointment"
    if start:
        ais.ais_4 = v2_ts(start)
    if minutes is not None:
        ais.ais_7 = str(minutes)
        ais.ais_8 = "min^minutes^UCUM"
    if status:
        ais.ais_10 = f"{status}^{status}^HL70278"
    n_loc = n_pers = 0
    # Segment order in the RESOURCES group: locations (AIL) before personnel (AIP).
    kinds = {"Location": 0, "Practitioner": 1, "PractitionerRole": 1}
    ordered = sorted(parts, key=lambda p: kinds.get((p.get("actor") or {}).get("reference", "").split("/", 1)[0], 2))
    for p in ordered:
        ref = (p.get("actor") or {}).get("reference", "")
        display = (p.get("actor") or {}).get("display", "")
        kind = ref.split("/", 1)[0] if "/" in ref else ""
        if kind == "Location":
            n_loc += 1
            res = resolve(ref) or {}
            g = res_grp.add_group("SIU_S12_LOCATION_RESOURCE")
            ail = g.add_segment("AIL")
            ail.ail_1 = str(n_loc)
            ail.ail_3 = _e(res.get("name") or display or ref.split("/", 1)[1])
            if start:
                ail.ail_6 = v2_ts(start)
        elif kind in ("Practitioner", "PractitionerRole"):
            n_pers += 1
            res = resolve(ref) or {}
            g = res_grp.add_group("SIU_S12_PERSONNEL_RESOURCE")
            aip = g.add_segment("AIP")
            aip.aip_1 = str(n_pers)
            ident = (_ident_of(res) or [{"value": ref.split("/", 1)[1]}])[0]
            name = (res.get("name") or [{}])[0]
            aip.aip_3 = "^".join([_e(ident["value"]), _e(name.get("family") or display),
                                  _e(" ".join(name.get("given", [])))]).rstrip("^")
            if p.get("type"):
                aip.aip_4 = _cwe(p["type"][0])
            if start:
                aip.aip_6 = v2_ts(start)
    return m.to_er7().replace("\n", "\r") + "\r"


def appointment_trigger(change: events.ResourceChange) -> str | None:
    """S12 on create, S15 on cancel (or delete), S13 when start/end moved; else nothing."""
    if change.res_type != "Appointment":
        return None
    old, new = change.old or {}, change.new or {}
    if change.method == "create":
        return "S12"
    if change.method == "delete":
        return "S15" if old.get("status") != "cancelled" else None
    if new.get("status") == "cancelled" and old.get("status") != "cancelled":
        return "S15"
    if new.get("status") != "cancelled" and (new.get("start") != old.get("start") or new.get("end") != old.get("end")):
        return "S13"
    return None


def _resolver(conn: Connection) -> Callable[[str], dict | None]:
    def resolve(ref: str) -> dict | None:
        try:
            from fhir_server.storage.repository import read_current

            rt, rid = ref.split("/", 1)
            row = read_current(conn, rt, rid)
            content = getattr(row, "content", None) if row is not None else None
            return json.loads(content) if content else None
        except Exception:  # enrichment only; the message goes out without it
            return None

    return resolve


_installed: list[Callable] = []


def install_outbound(
    destinations: list[str],
    *,
    sending_application: str = "FHIR-SERVER",
    sending_facility: str = "",
    echo_inbound: bool = False,
) -> Callable:
    """Subscribe to Appointment changes; each SIU goes to every `host:port` destination.

    Changes made by an inbound HL7 message are not echoed back out unless
    echo_inbound=True.  Returns the subscriber (pass to uninstall_outbound).
    """
    dests = [d.strip() for d in destinations if d and d.strip()]
    for d in dests:
        host, _, port = d.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"HL7 destination must be host:port, got {d!r}")

    def on_change(conn: Connection, change: events.ResourceChange) -> None:
        trigger = appointment_trigger(change)
        if trigger is None or not dests:
            return
        if applying_inbound.get() is not None and not echo_inbound:
            return
        appt = dict(change.new or change.old or {})
        appt.setdefault("id", change.res_id)
        if change.method == "delete":
            appt["status"] = "cancelled"
        now = _utcnow()
        message = build_siu(appt, trigger, sending_application=sending_application,
                            sending_facility=sending_facility, resolve=_resolver(conn), now=now)
        conn.execute(hl7_outbox.insert(), [
            {"created": now, "destination": d, "ordering_key": f"Appointment/{change.res_id}", "message": message,
             "status": "pending", "attempts": 0, "next_attempt": now, "last_error": None, "sent": None}
            for d in dests
        ])

    events.subscribe(on_change)
    _installed.append(on_change)
    return on_change


def uninstall_outbound(fn: Callable | None = None) -> None:
    for f in ([fn] if fn else list(_installed)):
        events.unsubscribe(f)
        if f in _installed:
            _installed.remove(f)


def _backoff(attempts: int, base: float, cap: float) -> timedelta:
    return timedelta(seconds=min(cap, base * (2 ** max(0, attempts - 1))))


def _default_send(destination: str, message: str, timeout: float) -> str:
    host, _, port = destination.rpartition(":")
    return send_mllp(host, int(port), message, timeout=timeout)


def deliver_pending(
    engine: Engine,
    now: datetime | None = None,
    *,
    send: Callable[[str, str, float], str] | None = None,
    max_attempts: int = 10,
    base_delay: float = 5.0,
    max_delay: float = 3600.0,
    timeout: float = 10.0,
    failed_blocks: bool = True,
) -> dict:
    """Send what is due; returns {'sent': n, 'retry': n, 'failed': n, 'skipped': n}.

    Order per (destination, appointment): only the oldest unsent row is tried;
    with failed_blocks a row that exhausted its attempts holds the later ones
    back until retry_failed() requeues it.
    """
    now = _aware(now) or _utcnow()
    send = send or _default_send
    c = hl7_outbox.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.id, c.destination, c.ordering_key, c.message, c.status, c.attempts, c.next_attempt)
            .where(c.status.in_(("pending", "failed") if failed_blocks else ("pending",)))
            .order_by(c.id)
        ).all()
    stats = {"sent": 0, "retry": 0, "failed": 0, "skipped": 0}
    seen: set[tuple[str, str]] = set()
    for row in rows:
        key = (row.destination, row.ordering_key)
        if key in seen:
            stats["skipped"] += 1
            continue
        seen.add(key)
        if row.status != "pending" or _aware(row.next_attempt) > now:
            continue
        attempts = row.attempts + 1
        with write_conn(engine) as conn:  # claim: another worker sees the bumped attempts
            claimed = conn.execute(
                update(hl7_outbox)
                .where(c.id == row.id, c.status == "pending", c.attempts == row.attempts)
                .values(attempts=attempts, next_attempt=now + timedelta(seconds=timeout * 3))
            ).rowcount
        if claimed != 1:
            continue
        error = None
        try:
            reply = send(row.destination, row.message, timeout)
            code, _, detail = parse_ack(reply)
            if code not in ("AA", "CA"):
                error = f"ACK {code or '?'}: {detail}".strip()
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        with write_conn(engine) as conn:
            if error is None:
                conn.execute(update(hl7_outbox).where(c.id == row.id).values(
                    status="sent", sent=_utcnow(), last_error=None))
                stats["sent"] += 1
            elif attempts >= max_attempts:
                conn.execute(update(hl7_outbox).where(c.id == row.id).values(status="failed", last_error=error))
                stats["failed"] += 1
            else:
                conn.execute(update(hl7_outbox).where(c.id == row.id).values(
                    next_attempt=now + _backoff(attempts, base_delay, max_delay), last_error=error))
                stats["retry"] += 1
        if error:
            log.warning("HL7 outbox %s to %s: %s", row.id, row.destination, error)
    return stats


def retry_failed(engine: Engine, outbox_id: int | None = None) -> int:
    """Requeue failed rows (one, or all) for immediate delivery; returns how many."""
    c = hl7_outbox.c
    q = update(hl7_outbox).where(c.status == "failed")
    if outbox_id is not None:
        q = q.where(c.id == outbox_id)
    with write_conn(engine) as conn:
        return conn.execute(q.values(status="pending", attempts=0, next_attempt=_utcnow())).rowcount


def outbox_status(engine: Engine, status: str | None = None, limit: int = 200) -> list[dict]:
    """Outbox rows (oldest first) with their trigger, for `fhir-server hl7 outbox`."""
    c = hl7_outbox.c
    q = select(c.id, c.created, c.destination, c.ordering_key, c.status, c.attempts, c.next_attempt,
               c.last_error, c.sent, c.message)
    if status:
        q = q.where(c.status == status)
    out = []
    with engine.connect() as conn:
        for r in conn.execute(q.order_by(c.id).limit(limit)):
            d = dict(r._mapping)
            msh = d.pop("message").split("\r", 1)[0].split("|")
            d["trigger"] = msh[8] if len(msh) > 8 else ""
            d["control_id"] = msh[9] if len(msh) > 9 else ""
            out.append(d)
    return out


async def run_outbox_worker(engine: Engine, stop_event: asyncio.Event, interval: float = 5.0, **kwargs) -> None:
    """Deliver every `interval` seconds until stop_event is set (asyncio flavour)."""
    while not stop_event.is_set():
        try:
            await asyncio.to_thread(deliver_pending, engine, **kwargs)
        except Exception:  # keep the loop alive; the next round retries
            log.exception("HL7 outbox delivery round failed")
        try:
            await asyncio.wait_for(stop_event.wait(), timeout=interval)
        except asyncio.TimeoutError:
            pass


def start_outbox_thread(engine: Engine, interval: float = 5.0, **kwargs) -> tuple[threading.Thread, threading.Event]:
    """Threaded flavour for a synchronous server: returns (thread, stop event)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                deliver_pending(engine, **kwargs)
            except Exception:
                log.exception("HL7 outbox delivery round failed")
            stop.wait(interval)

    t = threading.Thread(target=loop, name="hl7-outbox", daemon=True)
    t.start()
    return t, stop
