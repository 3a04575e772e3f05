"""Shared pieces of the HL7 v2 -> FHIR mapping engine: the mapping tables, errors,
path helpers and v2 primitive conversions (DTM)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import yaml

from . import ack

MAPPING_DIR = Path(__file__).resolve().parents[2] / "mappings" / "v2"

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4}|Z)?$")
_PATH_PART = re.compile(r"^(\w+)(?:\[(\d*)\])?$")
_URN_NS = uuid.UUID("6f1c7a52-3c1e-4d0e-9a57-7b2d1c0e5a11")


class MappingError(Exception):
    """A message that cannot be mapped; ACK AE with ERR-2 = location."""

    def __init__(self, message: str, location: str = "", code: tuple[str, str] = ack.ERR_DATA_TYPE):
        super().__init__(message)
        self.message = message
        self.location = location
        self.code = code


class UnsupportedMessage(Exception):
    """No mapping for this message type / trigger; ACK AR."""

    def __init__(self, message: str, code: tuple[str, str]):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Tables:
    datatypes: dict
    segments: dict
    vocab: dict
    messages: dict
    defaults: dict
    by_trigger: dict


@cache
def tables(directory: str | None = None) -> Tables:
    """Load the YAML once per process (tests may point at another directory)."""
    d = Path(directory) if directory else MAPPING_DIR

    def load(name: str) -> dict:
        return yaml.safe_load((d / name).read_text(encoding="utf-8")) or {}

    msgs = load("messages.yaml")
    by_trigger: dict[str, str] = {}
    for name, defn in msgs["messages"].items():
        for t in defn["triggers"]:
            by_trigger[t.upper()] = name
    return Tables(load("datatypes.yaml"), load("segments.yaml"), load("vocabulary.yaml"),
                  msgs["messages"], msgs.get("defaults", {}), by_trigger)


def supported_types() -> list[str]:
    return sorted(tables().by_trigger)


# --------------------------------------------------------------------------- helpers


def _set(target: dict, path: str, value: Any, override: bool = False) -> bool:
    """Write value at a dotted path; 'x[]' appends, 'x[2]' indexes (holes are pruned later)."""
    parts = path.split(".")
    cur: Any = target
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        m = _PATH_PART.match(p)
        if not m:
            raise ValueError(f"bad mapping path {path!r}")
        name, idx = m.group(1), m.group(2)
        if idx is None:
            if last:
                if cur.get(name) not in (None, "", [], {}) and not override:
                    return False
                cur[name] = value
                return True
            nxt = cur.get(name)
            if not isinstance(nxt, dict):
                nxt = cur[name] = {}
            cur = nxt
        else:
            lst = cur.setdefault(name, [])
            if idx == "":
                if last:
                    lst.append(value)
                    return True
                new: dict = {}
                lst.append(new)
                cur = new
            else:
                n = int(idx)
                while len(lst) <= n:
                    lst.append({})
                if last:
                    if lst[n] not in (None, "", {}) and not override:
                        return False
                    lst[n] = value
                    return True
                cur = lst[n]
    return False


def prune(value: Any) -> Any:
    """Drop empty strings, dicts, lists and None, recursively."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        out = [prune(v) for v in value]
        return [v for v in out if v not in (None, "", [], {})]
    return value


def _substitute(template: Any, value: Any) -> Any:
    if template == "$":
        return value
    if isinstance(template, dict):
        return {k: _substitute(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [_substitute(v, value) for v in template]
    return template


def conditional_url(res_type: str, system: str, value: str) -> str:
    return f"{res_type}?{identifier_query(system, value)}"


def identifier_query(system: str, value: str) -> str:
    return f"identifier={quote(system, safe=':/.-_~')}|{quote(value, safe='.-_~')}"


# --------------------------------------------------------------------------- v2 primitives


def parse_dtm(text: str, tz: ZoneInfo, loc: str) -> tuple[datetime | date | str, str]:
    """(python value, precision) of a DTM/DT/TS; precision in year|month|day|minute|second."""
    text = text.strip()
    m = _DTM.match(text)
    if not m:
        raise MappingError(f"Not a valid HL7 date/time: {text!r}", loc, ack.ERR_DATA_TYPE)
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        if mo is None:
            return y, "year"
        if d is None:
            datetime(int(y), int(mo), 1)
            return f"{y}-{mo}", "month"
        if h is None:
            return date(int(y), int(mo), int(d)), "day"
        micro = int(round(float(frac) * 1_000_000)) if frac else 0
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi or 0), int(s or 0), micro)
    except ValueError as exc:
        raise MappingError(f"Not a valid HL7 date/time: {text!r} ({exc})", loc, ack.ERR_DATA_TYPE) from None
    if off and off != "Z":
        sign = 1 if off[0] == "+" else -1
        from datetime import timezone as _tz

        dt = dt.replace(tzinfo=_tz(sign * timedelta(hours=int(off[1:3]), minutes=int(off[3:5]))))
    elif off == "Z":
        from datetime import timezone as _tz

        dt = dt.replace(tzinfo=_tz.utc)
    else:
        dt = dt.replace(tzinfo=tz)
    return dt, ("second" if s else "minute")


def fhir_datetime(dt: datetime) -> str:
    out = dt.isoformat(timespec="microseconds" if dt.microsecond else "seconds")
    return out.replace("+00:00", "Z") if out.endswith("+00:00") else out


def format_dtm(text: str, kind: str, tz: ZoneInfo, loc: str) -> str | None:
    """HL7 DTM -> FHIR date (DATE), dateTime (DTM) or instant (INSTANT)."""
    val, prec = parse_dtm(text, tz, loc)
    if kind == "DATE":
        if isinstance(val, datetime):
            return val.date().isoformat()
        return val.isoformat() if isinstance(val, date) else val
    if isinstance(val, datetime):
        return fhir_datetime(val)
    if kind == "INSTANT":
        if isinstance(val, date):
            return fhir_datetime(datetime(val.year, val.month, val.day, tzinfo=tz))
        raise MappingError(f"{text!r} is too imprecise for an instant", loc, ack.ERR_DATA_TYPE)
    return val.isoformat() if isinstance(val, date) else val

