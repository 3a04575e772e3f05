"""Inbound HL7 v2: store raw, de-duplicate, map, apply, acknowledge.

Every message is written to hl7_inbound before it is applied, so a message
whose apply failed (status 'error') can be replayed once the cause is fixed.
A repeated MSH-10 from the same sending application and facility (MSH-3, MSH-4)
that was already applied gets its stored ACK back and is not applied again.

Acknowledgement modes (v2.5 ch. 2.9): in original mode (MSH-15 and MSH-16 empty)
one ACK (AA/AE/AR) answers. In enhanced mode MSH-15 asks for the commit ACK
(CA/CE/CR) and MSH-16 for the application ACK (AA/AE/AR), each under its own
condition (AL, NE, ER, SU). The message is applied before either is sent, so both
are sent back on the connection, commit first; `NE|AL` gets its application ACK.
"""

from __future__ import annotations

import contextvars
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

from sqlalchemy import Connection, Engine, select, update

from fhir_server.model.jsonguard import bad_char_message
from fhir_server.storage.schema import hl7_inbound

from . import ack as ackmod
from .ack import AckError, build_ack, header_of
from .er7 import ER7Error, Message, decode_bytes, parse, peek_header
from .mapping import MappingError, UnsupportedMessage, map_message

_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")

log = logging.getLogger(__name__)

ApplyTransaction = Callable[[dict], dict]

# Set while an inbound message's transaction is being applied, so that the
# outbound subscriber can avoid echoing inbound SIU messages back out.
applying_inbound: contextvars.ContextVar[str | None] = contextvars.ContextVar("hl7v2_applying_inbound", default=None)


@dataclass
class Result:
    """What process_message did; `send` is False when MSH-15 said not to send the commit ACK.

    `ack` is the ACK of record (original mode, or the commit ACK in enhanced mode);
    `app_ack` the application ACK in enhanced mode when MSH-16 asks for it."""

    ack: str
    code: str
    status: str
    message_id: int | None
    send: bool = True
    duplicate: bool = False
    app_ack: str | None = None

    def replies(self) -> list[str]:
        """The ACKs to send back on the connection, in order."""
        return ([self.ack] if self.send else []) + ([self.app_ack] if self.app_ack else [])


@contextmanager
def write_conn(engine: Engine) -> Iterator[Connection]:
    """A write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
    with engine.connect() as conn:
        conn.info["write"] = True
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info.pop("write", None)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _errors_from_fhir(exc: Exception) -> list[AckError]:
    issues = getattr(exc, "issues", None) or []
    out = []
    for i in issues[:5]:
        expr = ", ".join(getattr(i, "expression", None) or [])
        text = getattr(i, "diagnostics", "") or str(i)
        out.append(AckError(ackmod.ERR_INTERNAL, f"{text} ({expr})" if expr else text))
    if not out:
        out.append(AckError(ackmod.ERR_INTERNAL, str(exc) or exc.__class__.__name__))
    return out


def _apply(msg: Message, apply_transaction: ApplyTransaction) -> tuple[str, list[AckError], str, str]:
    """(ack code, errors, status, error text) of mapping and applying one parsed message."""
    try:
        bundle = map_message(msg)
    except UnsupportedMessage as exc:
        return "AR", [AckError(exc.code, exc.message, "MSH^1^9")], "rejected", exc.message
    except MappingError as exc:
        return "AE", [AckError(exc.code, exc.message, exc.location)], "error", f"{exc.location}: {exc.message}"
    except Exception as exc:  # a bug in a mapping table must not drop the message
        log.exception("HL7 v2 mapping failed for %s", msg.control_id)
        return "AE", [AckError(ackmod.ERR_INTERNAL, f"Mapping failed: {exc}")], "error", f"mapping: {exc!r}"
    token = applying_inbound.set(msg.control_id)
    try:
        apply_transaction(bundle)
    except Exception as exc:
        errs = _errors_from_fhir(exc)
        log.warning("HL7 v2 message %s not applied: %s", msg.control_id, exc)
        return "AE", errs, "error", "; ".join(e.message for e in errs)
    finally:
        applying_inbound.reset(token)
    return "AA", [], "applied", ""


def _hex_escape_problem(msg: Message) -> str | None:
    """Why a \\Xhh\\ escape of `msg` decodes to what a FHIR string may not hold (a control
    character other than tab, CR and LF), or None. The leaves are decoded lazily while
    mapping, so the whole message is checked here once, before anything is applied."""
    e = msg.enc.escape
    if not e or f"{e}X" not in msg.text:
        return None
    q = re.escape(e)
    for m in re.finditer(q + "X([0-9A-Fa-f]+)" + q, msg.text):
        try:
            decoded = bytes.fromhex(m.group(1)).decode("utf-8", "replace")
        except ValueError:
            continue
        why = bad_char_message(decoded)
        if why is not None:
            return f"has an escape {e}X{m.group(1)}{e} that {why}"
    return None


def process_message_ex(
    raw: str | bytes,
    *,
    engine: Engine,
    apply_transaction: ApplyTransaction,
    sender_hint: str = "",
) -> Result:
    """process_message with the details the MLLP listener and tests need."""
    text = decode_bytes(raw)
    try:
        why = bad_char_message(text.replace("\x0b", "").replace("\x1c", ""))  # MLLP framing aside
        if why is not None:
            # stored and refused the same on every database (PostgreSQL text cannot hold U+0000)
            text = _CONTROL_CHARS.sub("\ufffd", text)
            raise ER7Error(f"the message {why}")
        msg = parse(text)
        why = _hex_escape_problem(msg)
        if why is not None:
            raise ER7Error(f"the message {why}")
    except ER7Error as exc:
        header = peek_header(text)
        ack = build_ack(header, "AR", [AckError(ackmod.ERR_SEGMENT_SEQUENCE, f"Not an HL7 v2 message: {exc}", "MSH^1")])
        with write_conn(engine) as conn:
            mid = conn.execute(hl7_inbound.insert().values(
                received=_now(), sender=(sender_hint or "")[:256], control_id=header.get("MSH-10", "")[:64],
                message_type=None, raw=text, status="rejected", ack_code="AR", ack=ack, error=str(exc),
            )).inserted_primary_key[0]
        return Result(ack, "AR", "rejected", mid)

    header = header_of(msg)
    sender = msg.dedup_scope[:256]
    control = msg.control_id[:64]
    msh15, msh16 = msg.msh.get(15), msg.msh.get(16)

    with write_conn(engine) as conn:
        prior = conn.execute(
            select(hl7_inbound.c.id, hl7_inbound.c.status, hl7_inbound.c.ack, hl7_inbound.c.ack_code)
            .where(hl7_inbound.c.sender == sender, hl7_inbound.c.control_id == control)
            .order_by(hl7_inbound.c.id)
        ).all()
        applied = [p for p in prior if p.status == "applied"]
        if applied:
            p = applied[0]
            code = p.ack_code or "AA"
            return Result(p.ack or build_ack(header, "AA", enc=msg.enc), code, "applied", p.id,
                          ackmod.ack_wanted(code, msh15, msh16), duplicate=True,
                          app_ack=_application_ack(header, "AA", [], "", msg, msh15, msh16))
        if prior:
            # An earlier attempt failed or was rejected: nothing was written, try again.
            mid = prior[-1].id
            conn.execute(update(hl7_inbound).where(hl7_inbound.c.id == mid).values(
                received=_now(), raw=msg.text, status="received", message_type=msg.message_type[:32],
                ack_code=None, ack=None, error=None))
        else:
            mid = conn.execute(hl7_inbound.insert().values(
                received=_now(), sender=sender, control_id=control, message_type=msg.message_type[:32],
                raw=msg.text, status="received",
            )).inserted_primary_key[0]

    code, errors, status, error = _apply(msg, apply_transaction)
    ack = build_ack(header, code, errors, text=error, enc=msg.enc)
    with write_conn(engine) as conn:
        conn.execute(update(hl7_inbound).where(hl7_inbound.c.id == mid).values(
            status=status, ack_code=ack.split("\r")[1].split(msg.enc.field)[1], ack=ack, error=error or None))
    sent_code = ack.split("\r")[1].split(msg.enc.field)[1]
    return Result(ack, sent_code, status, mid, ackmod.ack_wanted(sent_code, msh15, msh16),
                  app_ack=_application_ack(header, code, errors, error, msg, msh15, msh16))


def _application_ack(header: dict, code: str, errors: list[AckError], text: str, msg: Message, msh15: str, msh16: str) -> str | None:
    """Enhanced mode: the application ACK (AA/AE/AR) when MSH-16's condition asks for it."""
    if not ackmod.is_enhanced(msh15, msh16):
        return None
    cond = (msh16.strip() or "NE").upper()
    ok = code == "AA"
    if cond == "AL" or (cond == "ER" and not ok) or (cond == "SU" and ok):
        return build_ack(header, code, errors, text=text, enc=msg.enc, level="application")
    return None


def process_message(
    raw: str | bytes,
    *,
    engine: Engine,
    apply_transaction: ApplyTransaction,
    sender_hint: str = "",
) -> str:
    """Store, apply and acknowledge one message; returns the ACK (ER7, segments ended by \\r)."""
    return process_message_ex(raw, engine=engine, apply_transaction=apply_transaction, sender_hint=sender_hint).ack


def replay(
    engine: Engine,
    message_id: int | None = None,
    *,
    apply_transaction: ApplyTransaction,
    force: bool = False,
) -> list[dict]:
    """Re-apply stored messages: one by id, or every message in status 'error' (None).

    An applied message is only replayed with force=True (it would be applied twice).
    Returns [{id, control_id, status, ack_code, error}] for each message tried.
    """
    q = select(hl7_inbound.c.id, hl7_inbound.c.raw, hl7_inbound.c.status).order_by(hl7_inbound.c.id)
    if message_id is None:
        q = q.where(hl7_inbound.c.status.in_(("error", "received")))
    else:
        q = q.where(hl7_inbound.c.id == message_id)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    out = []
    for row in rows:
        if row.status == "applied" and not force:
            out.append({"id": row.id, "status": "applied", "ack_code": None, "error": "already applied (use force)"})
            continue
        try:
            msg = parse(row.raw)
        except ER7Error as exc:
            out.append({"id": row.id, "status": "rejected", "ack_code": "AR", "error": str(exc)})
            continue
        code, errors, status, error = _apply(msg, apply_transaction)
        ack = build_ack(header_of(msg), code, errors, text=error, enc=msg.enc)
        sent_code = ack.split("\r")[1].split(msg.enc.field)[1]
        with write_conn(engine) as conn:
            conn.execute(update(hl7_inbound).where(hl7_inbound.c.id == row.id).values(
                status=status, ack_code=sent_code, ack=ack, error=error or None))
        out.append({"id": row.id, "control_id": msg.control_id, "status": status, "ack_code": sent_code,
                    "error": error or None})
    return out


def inbound_status(engine: Engine, status: str | None = None, limit: int = 100) -> list[dict]:
    """Recent inbound messages (newest first) for a CLI listing."""
    c = hl7_inbound.c
    q = select(c.id, c.received, c.sender, c.control_id, c.message_type, c.status, c.ack_code, c.error)
    if status:
        q = q.where(c.status == status)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(c.id.desc()).limit(limit))]


def mllp_handler(engine: Engine, apply_transaction: ApplyTransaction) -> Callable[[bytes, object], list[bytes]]:
    """A listener handler (runs in a worker thread) around process_message: the ACK
    frames to send back (none, one, or commit + application ACK in enhanced mode)."""

    def handle(data: bytes, peer: object) -> bytes:
        hint = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        res = process_message_ex(data, engine=engine, apply_transaction=apply_transaction, sender_hint=hint)
        return [a.encode("utf-8") for a in res.replies()]

    return handle
