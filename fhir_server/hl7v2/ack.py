"""ACK construction, by hand so that even unparseable input gets a well-formed answer.

Original mode answers AA/AE/AR; enhanced mode (MSH-15 or MSH-16 valued)
answers the commit-level CA/CE/CR.  The ERR segment follows v2.5+: ERR-2 the
error location (SEG^seq^field^rep^comp^sub), ERR-3 the HL7 error code (table
0357), ERR-4 severity, ERR-8 a human readable message.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .er7 import DEFAULT_ENCODING, Encoding, escape

# HL7 table 0357 codes we use.
ERR_SEGMENT_SEQUENCE = ("100", "Segment sequence error")
ERR_REQUIRED_MISSING = ("101", "Required field missing")
ERR_DATA_TYPE = ("102", "Data type error")
ERR_TABLE_VALUE = ("103", "Table value not found")
ERR_UNSUPPORTED_MESSAGE = ("200", "Unsupported message type")
ERR_UNSUPPORTED_EVENT = ("201", "Unsupported event code")
ERR_UNSUPPORTED_PROCESSING = ("202", "Unsupported processing id")
ERR_UNSUPPORTED_VERSION = ("203", "Unsupported version id")
ERR_INTERNAL = ("207", "Application internal error")

ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}


@dataclass
class AckError:
    """One ERR segment."""

    code: tuple[str, str]
    message: str
    location: str = ""  # e.g. "PID^1^3^1"
    severity: str = "E"


_counter = itertools.count(1)


def new_control_id() -> str:
    """Unique enough across restarts and processes, and <= 20 characters (ST in MSH-10)."""
    return f"A{int(time.time()):x}{os.getpid() % 4096:03x}{next(_counter) % 65536:04x}".upper()


def ts(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%d%H%M%S") + now.strftime("%z")


def is_enhanced(msh15: str, msh16: str) -> bool:
    return bool(msh15.strip() or msh16.strip())


def ack_wanted(code: str, msh15: str, msh16: str) -> bool:
    """Whether the accept-ack conditions (AL/NE/ER/SU, HL7 table 0155) ask for this ACK."""
    if not is_enhanced(msh15, msh16):
        return True
    cond = (msh15.strip() or "AL").upper()
    ok = code in ("AA", "CA")
    return cond == "AL" or (cond == "ER" and not ok) or (cond == "SU" and ok)


def build_ack(
    header: dict[str, str],
    code: str,
    errors: list[AckError] | None = None,
    text: str = "",
    enc: Encoding | None = None,
    level: str = "commit",
) -> str:
    """ACK for a message whose MSH fields (raw ER7 text, keyed 'MSH-n') are in `header`.

    `code` is the original-mode code; it is turned into CA/CE/CR when the
    message asked for enhanced acknowledgement, unless `level` is "application"
    (the enhanced-mode application ACK keeps AA/AE/AR).
    """
    enc = enc or DEFAULT_ENCODING
    fs, cs = enc.field, enc.component
    if level == "commit" and is_enhanced(header.get("MSH-15", ""), header.get("MSH-16", "")):
        code = ENHANCED.get(code, code)
    trigger = ""
    msh9 = header.get("MSH-9", "")
    if msh9:
        parts = msh9.split(cs)
        trigger = parts[1] if len(parts) > 1 else ""
    version = (header.get("MSH-12", "") or "2.5").split(cs)[0] or "2.5"
    processing = header.get("MSH-11", "") or "P"
    msh = fs.join([
        "MSH", enc.msh2,
        header.get("MSH-5", ""), header.get("MSH-6", ""),
        header.get("MSH-3", ""), header.get("MSH-4", ""),
        ts(), "",
        cs.join(["ACK", trigger, "ACK"]) if trigger else cs.join(["ACK", "", "ACK"]),
        new_control_id(), processing, version,
    ])
    msa = fs.join(["MSA", code, escape(header.get("MSH-10", ""), enc), escape(text[:80], enc)])
    segs = [msh, msa]
    for err in errors or []:
        loc = err.location
        segs.append(fs.join([
            "ERR", "", loc,
            cs.join([err.code[0], escape(err.code[1], enc), "HL70357"]),
            err.severity, "", "", "",
            escape(err.message[:1000], enc),
        ]))
    return "\r".join(segs) + "\r"


def header_of(msg) -> dict[str, str]:
    """Raw MSH fields of a parsed er7.Message as build_ack wants them."""
    m = msg.msh
    return {f"MSH-{n}": m.raw(n) for n in range(1, 22)} | {"MSH-10": msg.control_id}


def parse_ack(text: str | bytes) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, first ERR text or MSA-3) of an ACK; ('', '', reason) if unreadable."""
    from .er7 import ER7Error, parse

    try:
        msg = parse(text)
    except ER7Error as exc:
        return "", "", f"unreadable ACK: {exc}"
    msa = msg.first("MSA")
    if msa is None:
        return "", "", "ACK without MSA"
    err = msg.first("ERR")
    detail = (err.get(8) or err.get(3, 2) or err.get(1)) if err else ""
    return msa.get(1).upper(), msa.get(2), detail or msa.get(3)
