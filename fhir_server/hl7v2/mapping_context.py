"""Walking the mapping rules of mappings/v2/*.yaml over segments and datatypes, with the
per-message context and the engine functions (`fn:`) for the places where the HL7
v2-to-FHIR IG needs logic rather than a table: identifier systems (ISO OIDs, national
schemes), references to Practitioner/Location/Slot, durations."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable
from urllib.parse import quote
from zoneinfo import ZoneInfo

from . import ack
from .er7 import Message, Segment, Value
from .mapping_base import MappingError, Tables, _OID, _URN_NS, _UUID, _set, _substitute, conditional_url, fhir_datetime, format_dtm, identifier_query, parse_dtm, prune

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

