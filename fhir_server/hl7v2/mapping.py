"""The one mapping engine: HL7 v2 message -> FHIR transaction Bundle, driven by mappings/v2/*.yaml.

The YAML says which segment, field and component goes to which FHIR path
(after the HL7 v2-to-FHIR IG tables).  This module only knows how to walk
those rules, convert v2 primitives (DTM, NM, coded values through the
vocabulary tables), and the handful of places where the IG needs logic rather
than a table: identifier systems (ISO OIDs and the national schemes of
fhir_server.identifiers), references to Practitioner/Location/Slot, and
durations.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote
from zoneinfo import ZoneInfo

import yaml

from . import ack
from .distinct import check_distinct
from .er7 import Message, Segment, Value

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


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """State of one message's mapping: extra entries, locations for errors."""

    msg: Message
    t: Tables
    tz: ZoneInfo
    seed: str
    extra: list[dict] = field(default_factory=list)
    extra_keys: dict[tuple, str] = field(default_factory=dict)
    slots: list[tuple[str, str]] = field(default_factory=list)
    seg: Segment | None = None
    loc: str = ""

    def full_url(self, *parts: Any) -> str:
        return "urn:uuid:" + str(uuid.uuid5(_URN_NS, self.seed + "|" + "|".join(map(str, parts))))

    def namespace_system(self, ns: str) -> str:
        known = self.t.defaults.get("namespaces") or {}
        if ns in known:
            return known[ns]
        if _OID.match(ns):
            return _canonical("urn:oid:" + ns)
        if "://" in ns or ns.startswith("urn:"):
            return ns
        tmpl = self.t.defaults.get("namespace_system", "urn:x-hl7v2:namespace:{ns}")
        return tmpl.format(ns=quote(ns, safe=""))

    def sender_system(self) -> str:
        """Scope for identifiers without an assigning authority: MSH-4, else MSH-3."""
        for n in (4, 3):
            v = self.msg.msh.first(n)
            if v:
                if v.get(2) and v.get(3).upper() == "ISO":
                    return _canonical("urn:oid:" + v.get(2))
                if v.get(1) or v.get(2):
                    return self.namespace_system(v.get(1) or v.get(2))
        return self.namespace_system("unknown")

    def add_extra(self, key: tuple, resource: dict, request: dict) -> str:
        if key in self.extra_keys:
            return self.extra_keys[key]
        url = self.full_url("extra", *key)
        self.extra_keys[key] = url
        self.extra.append({"fullUrl": url, "resource": resource, "request": request})
        return url


def _canonical(system: str) -> str:
    try:
        from fhir_server.identifiers import canonical_system

        return canonical_system(system) or system
    except ImportError:  # pragma: no cover - identifiers is part of the package
        return system


def _resolve_identifier(ctx: Context, hd: Value | None, type_code: str, value: str) -> tuple[str, str]:
    """(system, value) for a CX-like identifier, normalising national numbers.

    Order: an ISO OID (or UUID/URI) in the assigning authority's universal id;
    else a national scheme chosen by the identifier type code (CX.5, e.g.
    NNSWE) - among several schemes with that code the one the value validates
    under; else the namespace id; else the sending facility.
    """
    system = ""
    ns = uid = utype = ""
    if hd is not None:
        ns, uid, utype = hd.get(1), hd.get(2), hd.get(3).upper()
    if uid and (utype == "ISO" or (not utype and _OID.match(uid))):
        system = _canonical("urn:oid:" + uid)
    elif uid and utype == "UUID" and _UUID.match(uid):
        system = "urn:uuid:" + uid.lower()
    elif uid and utype in ("URI", "URL"):
        system = uid
    scheme = None
    try:
        from fhir_server.identifiers import all_schemes, normalise, scheme_for_system
    except ImportError:  # pragma: no cover
        all_schemes = None  # type: ignore[assignment]
    if all_schemes is not None:
        if system:
            scheme = scheme_for_system(system)
        elif type_code and type_code.upper().startswith("NN"):
            candidates = [s for s in all_schemes() if s.type_code.upper() == type_code.upper()]
            for s in candidates:
                if normalise(s.system, value):
                    scheme = s
                    break
            if candidates and scheme is None:
                raise MappingError(
                    f"{value!r} is not a valid {' / '.join(s.name for s in candidates)}", ctx.loc, ack.ERR_DATA_TYPE
                )
            if scheme is not None:
                system = scheme.system
        if scheme is not None:
            norm = normalise(scheme.system, value)
            if norm is None:
                raise MappingError(f"{value!r} is not a valid {scheme.name}", ctx.loc, ack.ERR_DATA_TYPE)
            value = norm
    if not system:
        if ns or uid:
            system = ctx.namespace_system(ns or uid)
        else:
            system = ctx.sender_system()
    return system, value


# --------------------------------------------------------------------------- engine functions (fn:...)


def _fn_identifier_system(ctx: Context, v: Value, rule: dict, holder: dict) -> str | None:
    if not v.get(1):
        return None
    system, value = _resolve_identifier(ctx, v.component(4), v.get(5), v.get(1))
    holder["value"] = value
    return system


def _fn_identifier_system_xcn(ctx: Context, v: Value, rule: dict, holder: dict) -> str | None:
    if not v.get(1):
        return None
    hd = v.component(9)
    return _resolve_identifier(ctx, hd, v.get(13), v.get(1))[0]


def _fn_ei_system(ctx: Context, v: Value, rule: dict, holder: dict) -> str | None:
    if not v.get(1):
        return None
    hd = Value(v.enc.component.join([v.get(2), v.get(3), v.get(4)]), v.enc)
    return _resolve_identifier(ctx, hd if hd else None, "", v.get(1))[0]


def _fn_coding_system(ctx: Context, v: Value, rule: dict, holder: dict) -> str | None:
    name = v.get(rule["comp"]) if "comp" in rule else v.get(1)
    if not name:
        return None
    known = ctx.t.vocab.get("CodingSystem", {})
    if name in known:
        return known[name]
    up = name.upper()
    for k, val in known.items():
        if k.upper() == up:
            return val
    m = re.fullmatch(r"HL7(\d{4})", up)
    if m:
        return f"http://terminology.hl7.org/CodeSystem/v2-{m.group(1)}"
    if "://" in name or name.startswith("urn:"):
        return name
    if _OID.match(name):
        return "urn:oid:" + name
    return None  # local/unknown coding system names are not URIs


def _display_name(name: dict | None) -> str:
    if not name:
        return ""
    bits = list(name.get("prefix", [])) + list(name.get("given", [])) + [name.get("family", "")]
    return " ".join(b for b in bits if b)


def _fn_practitioner_ref(ctx: Context, v: Value, rule: dict, holder: dict) -> dict | None:
    prac = prune(apply_datatype(ctx, "XCN[Practitioner]", v))
    if not prac:
        return None
    display = _display_name((prac.get("name") or [None])[0])
    ident = (prac.get("identifier") or [None])[0]
    if not ident or not ident.get("value"):
        return {"display": display} if display else None
    ident.setdefault("system", ctx.sender_system())
    resource = {"resourceType": "Practitioner", **prac}
    url = ctx.add_extra(
        ("Practitioner", ident["system"], ident["value"]),
        resource,
        {"method": "POST", "url": "Practitioner", "ifNoneExist": identifier_query(ident["system"], ident["value"])},
    )
    out = {"reference": url}
    if display:
        out["display"] = display
    return out


_PHYSICAL = [(3, "bd", "Bed"), (2, "ro", "Room"), (8, "lvl", "Level"), (7, "bu", "Building"),
             (1, "area", "Area"), (4, "si", "Site")]


def _fn_location_ref(ctx: Context, v: Value, rule: dict, holder: dict) -> dict | None:
    loc = prune(apply_datatype(ctx, "PL[Location]", v))
    levels = [v.get(n) for n in (4, 7, 8, 1, 2, 3)]
    if not any(levels):
        return None
    key = "/".join(levels).strip("/")
    facility = v.component(4)
    system = ctx.sender_system()
    if facility and facility.get(2) and facility.get(3).upper() == "ISO":
        system = _canonical("urn:oid:" + facility.get(2))
    resource = {"resourceType": "Location", "identifier": [{"system": system, "value": key}], **loc}
    for comp, code, disp in _PHYSICAL:
        if v.get(comp):
            resource["physicalType"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/location-physical-type", "code": code, "display": disp}]}
            break
    url = ctx.add_extra(("Location", system, key), resource,
                        {"method": "POST", "url": "Location", "ifNoneExist": identifier_query(system, key)})
    return {"reference": url, "display": resource.get("name") or key}


def _fn_squash(ctx: Context, v: Value, rule: dict, holder: dict) -> str | None:
    return None  # only used with `format`, see _convert


def _fn_birth_time(ctx: Context, v: Value, rule: dict, holder: dict) -> str | None:
    val, prec = parse_dtm(v.get(1), ctx.tz, ctx.loc)
    return fhir_datetime(val) if isinstance(val, datetime) else None


_UNITS = {"min": 60, "mins": 60, "minute": 60, "minutes": 60, "m": 60, "s": 1, "sec": 1, "second": 1,
          "seconds": 1, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400,
          "days": 86400, "wk": 604800, "week": 604800}


def _fn_end_from_duration(ctx: Context, v: Value, rule: dict, holder: dict) -> str | None:
    seg = ctx.seg
    args = rule.get("args", {})
    start_txt = seg.get(args["start"]) if seg else ""
    dur = v.get(1)
    if not start_txt or not dur:
        return None
    try:
        amount = float(dur)
    except ValueError:
        raise MappingError(f"Duration {dur!r} is not a number", ctx.loc, ack.ERR_DATA_TYPE) from None
    unit = (seg.get(args["units"]) or "min").lower()
    secs = _UNITS.get(unit)
    if secs is None:
        raise MappingError(f"Unknown duration unit {unit!r}", f"{seg.name}^{seg.index}^{args['units']}",
                           ack.ERR_TABLE_VALUE)
    start, _ = parse_dtm(start_txt, ctx.tz, ctx.loc)
    if not isinstance(start, datetime):
        if isinstance(start, date):
            start = datetime(start.year, start.month, start.day, tzinfo=ctx.tz)
        else:
            return None
    return fhir_datetime(start + timedelta(seconds=amount * secs))


def _fn_slot_ref(ctx: Context, v: Value, rule: dict, holder: dict) -> dict | None:
    ident = prune(apply_datatype(ctx, "CWE[Identifier]", v))
    if not ident.get("value"):
        return None
    system = ident.get("system") or ctx.sender_system()
    ctx.slots.append((system, ident["value"]))
    return {"reference": conditional_url("Slot", system, ident["value"])}


FUNCTIONS: dict[str, Callable[[Context, Value, dict, dict], Any]] = {
    "identifier_system": _fn_identifier_system,
    "identifier_system_xcn": _fn_identifier_system_xcn,
    "ei_system": _fn_ei_system,
    "coding_system": _fn_coding_system,
    "practitioner_ref": _fn_practitioner_ref,
    "location_ref": _fn_location_ref,
    "squash": _fn_squash,
    "birth_time": _fn_birth_time,
    "end_from_duration": _fn_end_from_duration,
    "slot_ref": _fn_slot_ref,
}


# --------------------------------------------------------------------------- rule walking


def _vocab(ctx: Context, name: str, code: str) -> Any:
    table = ctx.t.vocab.get(name)
    if table is None:
        raise KeyError(f"unknown vocabulary {name!r}")
    if code in table:
        return table[code]
    low = code.lower()
    for k, val in table.items():
        if str(k).lower() == low:
            return val
    return None


def _convert(ctx: Context, rule: dict, v: Value, leaf: str, sub: Value, holder: dict) -> Any:
    """One rule applied to one value: `leaf` is the addressed text, `sub` the addressed Value."""
    if "format" in rule:
        names = re.findall(r"\{(\d+)\}", rule["format"])
        vals = {n: v.get(int(n)) for n in names}
        if rule.get("type") == "fn:squash":
            out = " ".join(" ".join(vals[n] for n in names).split())
            return out or None
        if not all(vals.values()):
            return None
        return re.sub(r"\{(\d+)\}", lambda m: vals[m.group(1)], rule["format"])
    typ = rule.get("type", "ST")
    if typ.startswith("fn:"):
        # Data type level functions look at the whole value (CX.4 with CX.5 ...).
        whole = typ[3:] in ("identifier_system", "identifier_system_xcn", "ei_system", "coding_system")
        return FUNCTIONS[typ[3:]](ctx, v if whole else sub, rule, holder)
    if "[" in typ:
        out = prune(apply_datatype(ctx, typ, sub))
        return out or None
    if not leaf:
        return None
    if "value" in rule:
        return rule["value"]
    if typ == "ST":
        return leaf
    if typ in ("DTM", "DATE", "INSTANT"):
        return format_dtm(leaf, typ, ctx.tz, ctx.loc)
    if typ in ("INT", "NM"):
        try:
            num = float(leaf)
        except ValueError:
            raise MappingError(f"{leaf!r} is not a number", ctx.loc, ack.ERR_DATA_TYPE) from None
        return int(num) if typ == "INT" or num.is_integer() else num
    if typ in ("CODE", "CODING", "BOOL"):
        return _vocab(ctx, rule["vocab"], leaf)
    raise KeyError(f"unknown rule type {typ!r}")


def _place(ctx: Context, rule: dict, value: Any, target: dict) -> None:
    if value is None or value == {} or value == []:
        return
    if isinstance(value, dict) and rule.get("defaults"):
        for k, d in rule["defaults"].items():
            value.setdefault(k, d)
    if "wrap" in rule:
        value = _substitute(rule["wrap"], value)
    to = rule["to"]
    if "join" in rule and isinstance(value, str):
        cur = target.get(to)
        if cur:
            target[to] = cur + rule["join"] + value
            return
    _set(target, to, value, rule.get("override", False))


def apply_datatype(ctx: Context, name: str, v: Value) -> dict:
    rules = ctx.t.datatypes.get(name)
    if rules is None:
        raise KeyError(f"unknown data type map {name!r}")
    out: dict = {}
    for rule in rules:
        if rule.get("unless") and out.get(rule["unless"]) is not None:
            continue
        comp = rule.get("comp")
        if comp is None:
            leaf, sub = "", v
        else:
            leaf = v.get(comp)
            sub = v.component(int(comp)) if "." not in str(comp) else Value(leaf, v.enc)
        if "value" in rule and "format" not in rule and not str(rule.get("type", "")).startswith(("fn:", )) \
                and "[" not in str(rule.get("type", "")):
            if leaf:
                _set(out, rule["to"], rule["value"], rule.get("override", False))
            continue
        _place(ctx, rule, _convert(ctx, rule, v, leaf, sub, out), out)
    return out


def apply_segment(ctx: Context, seg: Segment, map_name: str, target: dict) -> dict:
    """Apply a segment map's rules to `seg`, writing into `target`."""
    rules = ctx.t.segments.get(map_name)
    if rules is None:
        raise KeyError(f"unknown segment map {map_name!r}")
    ctx.seg = seg
    for rule in rules:
        if rule.get("unless") and target.get(rule["unless"]) is not None:
            continue
        fld = rule["field"]
        comp = rule.get("comp")
        if isinstance(fld, str) and "." in fld:
            f, c = fld.split(".", 1)
            fld, comp = int(f), c
        fld = int(fld)
        base_loc = f"{seg.name}^{seg.index}^{fld}"
        if "when" in rule:
            w = rule["when"]
            if seg.get(w["field"]).lower() not in {str(x).lower() for x in w["in"]}:
                continue
        reps = seg.reps(fld)
        if not reps:
            if rule.get("required"):
                raise MappingError(f"{seg.name}-{fld} is required", base_loc, ack.ERR_REQUIRED_MISSING)
            continue
        many = rule["to"].endswith("[]")
        for r, v in enumerate(reps, start=1):
            ctx.loc = f"{base_loc}^{r}"
            if comp is not None:
                leaf = v.get(comp)
                sub = v.component(int(comp)) if "." not in str(comp) else Value(leaf, v.enc)
            else:
                leaf, sub = v.get(1), v
            value = _convert(ctx, rule, sub if comp is not None else v, leaf, sub, target)
            if value is None:
                continue
            if "value" in rule and "[" not in str(rule.get("type", "")):
                value = rule["value"]
            _place(ctx, rule, value, target)
            if not many:
                break
    return target


# --------------------------------------------------------------------------- messages


def _national(system: str) -> bool:
    try:
        from fhir_server.identifiers import scheme_for_system
    except ImportError:  # pragma: no cover
        return False
    return scheme_for_system(system) is not None


def _type_code(ident: dict) -> str:
    for c in (ident.get("type") or {}).get("coding", []):
        if c.get("code"):
            return c["code"]
    return ""


def choose_identifier(resource: dict, prefer: list[str] | None = None) -> tuple[str, str] | None:
    """The identifier to match on: preferred type codes, else national, else MR, else first."""
    idents = [i for i in resource.get("identifier", []) if i.get("system") and i.get("value")]
    if not idents:
        return None
    ranked: list[dict] = []
    for code in prefer or []:
        ranked += [i for i in idents if _type_code(i) == code]
    ranked += [i for i in idents if _national(i["system"])]
    ranked += [i for i in idents if _type_code(i) == "MR"]
    ranked += idents
    best = ranked[0]
    return best["system"], best["value"]


def _segments_after(msg: Message, anchor: Segment, name: str) -> list[Segment]:
    out, seen = [], False
    for s in msg.segments:
        if s is anchor:
            seen = True
            continue
        if seen:
            if s.name == name:
                out.append(s)
            else:
                break
    return out


def _resolve_refs(value: Any, ctx: Context, built: dict, matches: dict) -> Any:
    if isinstance(value, dict):
        if set(value) == {"ref"}:
            return {"reference": built[value["ref"]][0]["fullUrl"]}
        if set(value) == {"match"}:
            rt, sysval = matches[value["match"]]
            return {"reference": conditional_url(rt, *sysval)}
        return {k: _resolve_refs(v, ctx, built, matches) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, ctx, built, matches) for v in value]
    return value


def _patch_parameters(ops: list[dict], ctx: Context, built: dict, matches: dict) -> dict:
    params = []
    for op in ops:
        parts = [{"name": "type", "valueCode": op["type"]}, {"name": "path", "valueString": op["path"]}]
        if "name" in op:
            parts.append({"name": "name", "valueString": op["name"]})
        for k, v in op.items():
            if k.startswith("value"):
                parts.append({"name": "value", k: _resolve_refs(v, ctx, built, matches)})
        if "parts" in op:
            sub = []
            for pname, pval in op["parts"].items():
                (vk, vv), = pval.items()
                sub.append({"name": pname, vk: _resolve_refs(vv, ctx, built, matches)})
            parts.append({"name": "value", "part": sub})
        params.append({"name": "operation", "part": parts})
    return {"resourceType": "Parameters", "parameter": params}


def map_message(msg: Message, directory: str | None = None) -> dict:
    """The FHIR transaction Bundle (dict) for a parsed message.

    Raises UnsupportedMessage (-> AR) or MappingError (-> AE).
    """
    t = tables(directory)
    mtype = msg.message_type
    name = t.by_trigger.get(mtype)
    if name is None:
        known_codes = {k.split("^")[0] for k in t.by_trigger}
        if msg.message_code in known_codes:
            raise UnsupportedMessage(f"Unsupported event {mtype}; supported: {', '.join(sorted(t.by_trigger))}",
                                     ack.ERR_UNSUPPORTED_EVENT)
        raise UnsupportedMessage(f"Unsupported message type {mtype or '(empty)'}", ack.ERR_UNSUPPORTED_MESSAGE)
    defn = t.messages[name]
    tz = ZoneInfo(t.defaults.get("timezone", "UTC"))
    ctx = Context(msg=msg, t=t, tz=tz, seed=f"{msg.sender}|{msg.control_id}|{hash(msg.text)}")
    trigger = msg.trigger

    # Phase 1: build resources.
    built: dict[str, list[dict]] = {}  # key -> list of {fullUrl, resource, rdef, seg}
    for rdef in defn["resources"]:
        segs = msg.all(rdef["segment"])
        if not segs:
            if rdef.get("required"):
                raise MappingError(f"{rdef['segment']} segment is missing", rdef["segment"], ack.ERR_SEGMENT_SEQUENCE)
            continue
        if not rdef.get("each"):
            segs = segs[:1]
        for n, seg in enumerate(segs):
            res: dict = {"resourceType": rdef["resourceType"]}
            for m in rdef.get("maps", []):
                apply_segment(ctx, seg, m, res)
            for part in rdef.get("parts", []):
                psegs = _segments_after(msg, seg, part["segment"]) if part.get("directly_after") else msg.all(part["segment"])
                if not part.get("each") and not part.get("directly_after"):
                    psegs = psegs[:1]
                for pseg in psegs:
                    if part.get("at"):
                        sub: dict = {}
                        apply_segment(ctx, pseg, part["map"], sub)
                        sub = prune(sub)
                        if sub:
                            for k, d in (part.get("defaults") or {}).items():
                                sub.setdefault(k, d)
                            _set(res, part["at"], sub)
                    else:
                        apply_segment(ctx, pseg, part["map"], res)
            for k, d in (rdef.get("defaults") or {}).items():
                if res.get(k) in (None, "", [], {}):
                    res[k] = d
            if trigger in (rdef.get("status_by_trigger") or {}):
                res["status"] = rdef["status_by_trigger"][trigger]
            built.setdefault(rdef["key"], []).append(
                {"fullUrl": ctx.full_url(rdef["key"], n), "resource": prune(res), "rdef": rdef, "seg": seg})

    # Phase 2: identifiers to match on (needed by conditional references).
    matches: dict[str, tuple[str, tuple[str, str]]] = {}
    for key, items in built.items():
        for item in items:
            rdef, res = item["rdef"], item["resource"]
            syn = rdef.get("synthetic_identifier")
            if syn and not res.get("identifier") and syn["from_ref"] in matches:
                psys, pval = matches[syn["from_ref"]][1]
                res["identifier"] = [{"system": syn["system"],
                                      "value": f"{pval}@{psys}#{item['seg'].get(syn['field']) or item['seg'].index}"}]
            chosen = choose_identifier(res, rdef.get("match_prefer_type"))
            item["match"] = chosen
            if chosen and key not in matches:
                matches[key] = (rdef["resourceType"], chosen)

    check_distinct(built)  # MRG: the merged patient is not the surviving one

    # Phase 3: references and requests.
    entries: list[dict] = []
    for key, items in built.items():
        for item in items:
            rdef, res, seg = item["rdef"], item["resource"], item["seg"]
            for ref in rdef.get("refs", []):
                if ref.get("if_present") and ref["if_present"] not in built:
                    continue
                if any(k in built or k in matches for k in _ref_keys(ref["value"])) and all(
                        (k in built if kind == "ref" else k in matches) for kind, k in _ref_kinds(ref["value"])):
                    _set(res, ref["path"], _resolve_refs(ref["value"], ctx, built, matches))
            request = dict((rdef.get("request_by_trigger") or {}).get(trigger) or rdef["request"])
            method = request["method"]
            rt = rdef["resourceType"]
            chosen = item["match"]
            if request.get("match") == "identifier" and chosen is None:
                if request.get("otherwise") == "POST":
                    method = "POST"
                    request = {"method": "POST"}
                else:
                    fld = request.get("match_field", 1)
                    raise MappingError(
                        f"{seg.name}: no identifier with an assigning authority or system to match the {rt} on",
                        f"{seg.name}^{seg.index}^{fld}", ack.ERR_REQUIRED_MISSING)
            entry: dict = {"fullUrl": item["fullUrl"]}
            if method == "PUT":
                entry["resource"] = res
                entry["request"] = {"method": "PUT", "url": conditional_url(rt, *chosen)}
            elif method == "POST":
                entry["resource"] = res
                entry["request"] = {"method": "POST", "url": rt}
                if request.get("match") == "identifier" and chosen:
                    entry["request"]["ifNoneExist"] = identifier_query(*chosen)
            elif method == "PATCH":
                entry["resource"] = _patch_parameters(request["operations"], ctx, built, matches)
                entry["request"] = {"method": "PATCH", "url": conditional_url(rt, *chosen)}
            elif method == "DELETE":
                entry.pop("fullUrl")
                entry["request"] = {"method": "DELETE", "url": conditional_url(rt, *chosen)}
            else:  # pragma: no cover - YAML error
                raise KeyError(f"unknown request method {method!r}")
            entries.append(entry)
            # Slots referenced by an appointment follow its status.
            ss = rdef.get("slot_status")
            if ss and ctx.slots:
                status = res.get("status", "")
                slot_status = "free" if (method == "DELETE" or status in ss.get("free", [])) else "busy"
                for sys_, val in dict.fromkeys(ctx.slots):
                    entries.append({"request": {"method": "PATCH", "url": conditional_url("Slot", sys_, val)},
                                    "resource": {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
                                        {"name": "type", "valueCode": "replace"},
                                        {"name": "path", "valueString": "Slot.status"},
                                        {"name": "value", "valueCode": slot_status}]}]}})
    entries.extend(ctx.extra)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _ref_kinds(value: Any):
    if isinstance(value, dict):
        if set(value) in ({"ref"}, {"match"}):
            (kind, k), = value.items()
            yield kind, k
            return
        for v in value.values():
            yield from _ref_kinds(v)
    elif isinstance(value, list):
        for v in value:
            yield from _ref_kinds(v)


def _ref_keys(value: Any):
    return [k for _, k in _ref_kinds(value)]
