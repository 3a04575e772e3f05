"""HL7 v2 message -> FHIR transaction Bundle, driven by mappings/v2/*.yaml.

Split by job: mapping_base (tables, errors, DTM primitives), mapping_context
(per-message context, rule walking, the IG's logic functions), and this module
(whole messages: anchors, references between built resources, the Bundle).

The YAML says which segment, field and component goes to which FHIR path
(after the HL7 v2-to-FHIR IG tables).  This module only knows how to walk
those rules, convert v2 primitives (DTM, NM, coded values through the
vocabulary tables), and the handful of places where the IG needs logic rather
than a table: identifier systems (ISO OIDs and the national schemes of
fhir_server.identifiers), references to Practitioner/Location/Slot, and
durations.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from . import ack
from .distinct import check_distinct
from .er7 import Message, Segment
from .mapping_base import (  # noqa: F401  (MappingError, UnsupportedMessage, supported_types are this module's public names)
    MappingError, UnsupportedMessage, _set, conditional_url, identifier_query, prune, supported_types, tables,
)
from .mapping_context import Context, apply_segment


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

