"""Write-time extraction of search values into the narrow idx_* tables.

Called inside the write transaction, so a search right after a write sees it.
A failing expression is logged and skipped: a write must never fail because a
search value could not be extracted.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Iterable

import orjson
from sqlalchemy import Connection, delete

from ..storage.schema import INDEX_TABLES
from ..storage.repository import buffer_rows, flush
from . import national, registry
from .fhirpath import Item, evaluate
from .values import (
    LEN_CODE,
    LEN_ID,
    LEN_Q_CODE,
    LEN_Q_SYSTEM,
    LEN_SYSTEM,
    LEN_TYPE,
    LEN_TYPE_CODE,
    LEN_TYPE_SYSTEM,
    LEN_URI,
    cut,
    normalize,
    parse_date_range,
    parse_reference,
    ucum_canonical,
)

log = logging.getLogger(__name__)
V2_0203 = national.V2_0203

BIG = 1e300  # stands in for an open end of a numeric range (columns are NOT NULL)
MAX_COMPOSITE_COMBINATIONS = 64

_HUMAN_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


# ---------------------------------------------------------------- per-type converters


def _strings(items: list[Item]) -> list[dict]:
    out: list[str] = []
    for v, _ in items:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            keys = _HUMAN_NAME_PARTS if ("family" in v or "given" in v) else _ADDRESS_PARTS
            found = False
            for k in keys:
                x = v.get(k)
                if isinstance(x, str):
                    out.append(x)
                    found = True
                elif isinstance(x, list):
                    out.extend(s for s in x if isinstance(s, str))
                    found = True
            if not found:  # other complex types: their direct string children
                for x in v.values():
                    if isinstance(x, str):
                        out.append(x)
    seen, rows = set(), []
    for s in out:
        if s and s not in seen:
            seen.add(s)
            rows.append({"value_norm": normalize(s), "value_exact": s})
    return rows


def _tok(system: Any, code: Any, text: Any = None, tsys: Any = None, tcode: Any = None) -> dict:
    return {
        "system": cut(system, LEN_SYSTEM) if isinstance(system, str) else None,
        "code": cut(code, LEN_CODE) if isinstance(code, str) else None,
        "text_norm": normalize(text) if isinstance(text, str) and text else None,
        "type_system": cut(tsys, LEN_TYPE_SYSTEM) if isinstance(tsys, str) else None,
        "type_code": cut(tcode, LEN_TYPE_CODE) if isinstance(tcode, str) else None,
    }


def _tokens(items: list[Item]) -> list[dict]:
    rows: list[dict] = []
    for v, _ in items:
        if isinstance(v, bool):
            rows.append(_tok(None, "true" if v else "false"))
        elif isinstance(v, (str, int, float)):
            rows.append(_tok(None, str(v)))
        elif isinstance(v, dict):
            if "coding" in v or ("text" in v and "value" not in v and "code" not in v):
                displays = set()
                for c in v.get("coding") or ():
                    if isinstance(c, dict) and (c.get("code") or c.get("system")):
                        text = c.get("display") or v.get("text")
                        rows.append(_tok(c.get("system"), c.get("code"), text))
                        if isinstance(text, str):
                            displays.add(normalize(text))
                text = v.get("text")
                if isinstance(text, str) and text and normalize(text) not in displays:
                    # text-only row, so that :text also finds CodeableConcept.text
                    rows.append(_tok(None, None, text))
            elif "value" in v and "code" not in v:  # Identifier / ContactPoint
                tsys = tcode = None
                ttext = None
                typ = v.get("type")
                if isinstance(typ, dict):
                    ttext = typ.get("text")
                    for c in typ.get("coding") or ():
                        if isinstance(c, dict) and c.get("code"):
                            tsys, tcode = c.get("system"), c.get("code")
                            ttext = ttext or c.get("display")
                            break
                system, value, national_type = national.canonical(v.get("system"), v.get("value"))
                if tcode is None and national_type:  # national number without a type: the scheme's
                    tsys, tcode = V2_0203, national_type
                for form in national.search_forms(v.get("system"), value) or [value]:
                    rows.append(_tok(system, form, ttext, tsys, tcode))
            elif "code" in v or "system" in v:  # Coding (or Quantity used as token)
                rows.append(_tok(v.get("system"), v.get("code"), v.get("display")))
    return rows


def _date_of(value: Any) -> tuple | None:
    if isinstance(value, str):
        try:
            return parse_date_range(value)
        except ValueError:
            return None
    return None


def _dates(items: list[Item]) -> list[dict]:
    rows = []
    for v, _ in items:
        if isinstance(v, str):
            r = _date_of(v)
            if r:
                rows.append({"low": r[0], "high": r[1]})
        elif isinstance(v, dict):
            if "start" in v or "end" in v:  # Period: an absent end is open
                s, e = _date_of(v.get("start")), _date_of(v.get("end"))
                if s or e:
                    rows.append({"low": s[0] if s else None, "high": e[1] if e else None})
            elif "event" in v or "repeat" in v:  # Timing
                for ev in v.get("event") or ():
                    r = _date_of(ev)
                    if r:
                        rows.append({"low": r[0], "high": r[1]})
                bounds = (v.get("repeat") or {}).get("boundsPeriod")
                if isinstance(bounds, dict):
                    rows.extend(_dates([(bounds, None)]))
    return rows


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _numbers(items: list[Item]) -> list[dict]:
    rows = []
    for v, _ in items:
        n = _num(v)
        if n is None and isinstance(v, dict):
            n = _num(v.get("value"))
            if n is None and ("low" in v or "high" in v):
                lo, hi = _num((v.get("low") or {}).get("value")), _num((v.get("high") or {}).get("value"))
                if lo is not None or hi is not None:
                    rows.append({"value": lo if lo is not None else hi, "low": lo if lo is not None else -BIG,
                                 "high": hi if hi is not None else BIG})
                continue
        if n is not None:
            rows.append({"value": n, "low": n, "high": n})
    return rows


def _quantity_row(q: dict) -> dict | None:
    n = _num(q.get("value"))
    if n is None:
        return None
    system, code = q.get("system"), q.get("code")
    if "currency" in q:  # Money
        system, code = "urn:iso:std:iso:4217", q.get("currency")
    cc, cv = ucum_canonical(code, n) if system in (None, "http://unitsofmeasure.org") else (None, None)
    return {
        "system": cut(system, LEN_Q_SYSTEM) if isinstance(system, str) else None,
        "code": cut(code, LEN_Q_CODE) if isinstance(code, str) else None,
        "unit": cut(q.get("unit"), LEN_Q_CODE) if isinstance(q.get("unit"), str) else None,
        "value": n, "low": n, "high": n, "canon_code": cc, "canon_value": cv,
    }


def _quantities(items: list[Item]) -> list[dict]:
    rows = []
    for v, _ in items:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.append({"system": None, "code": None, "unit": None, "value": float(v), "low": float(v),
                         "high": float(v), "canon_code": None, "canon_value": None})
        elif isinstance(v, dict):
            if "value" in v:
                r = _quantity_row(v)
                if r:
                    rows.append(r)
            elif "low" in v or "high" in v:  # Range
                lo, hi = v.get("low") or {}, v.get("high") or {}
                rl, rh = _quantity_row(lo), _quantity_row(hi)
                base = rl or rh
                if base:
                    base = dict(base)
                    base["low"] = rl["value"] if rl else -BIG
                    base["high"] = rh["value"] if rh else BIG
                    base["canon_code"] = base["canon_value"] = None
                    rows.append(base)
            elif isinstance(v.get("origin"), dict):  # SampledData: its origin quantity
                r = _quantity_row(v["origin"])
                if r:
                    rows.append(r)
    return rows


def _uris(items: list[Item]) -> list[dict]:
    return [{"uri": cut(v, LEN_URI)} for v, _ in items if isinstance(v, str) and v]


def _references(items: list[Item]) -> list[dict]:
    rows = []
    for v, _ in items:
        if isinstance(v, str):  # canonical / uri: the version is not indexed
            url = v.split("|", 1)[0]
            t, i, u = parse_reference(url)
            rows.append({"target_type": t, "target_id": i, "url": cut(u, LEN_URI), "ident_system": None,
                         "ident_value": None})
        elif isinstance(v, dict):
            t = i = u = None
            ref = v.get("reference")
            if isinstance(ref, str) and ref:
                t, i, u = parse_reference(ref)
            ident = v.get("identifier") if isinstance(v.get("identifier"), dict) else {}
            isys, ival = ident.get("system"), ident.get("value")
            if t or u or ival:
                rows.append({
                    "target_type": cut(t, LEN_TYPE), "target_id": cut(i, LEN_ID), "url": cut(u, LEN_URI),
                    "ident_system": cut(isys, LEN_SYSTEM) if isinstance(isys, str) else None,
                    "ident_value": cut(ival, LEN_CODE) if isinstance(ival, str) else None,
                })
    return rows


CONVERTERS = {
    "string": _strings,
    "token": _tokens,
    "date": _dates,
    "number": _numbers,
    "quantity": _quantities,
    "uri": _uris,
    "reference": _references,
}


# ---------------------------------------------------------------- extraction


def extract(res_type: str, resource: dict) -> dict[str, list[dict]]:
    """All index rows of a resource, by index type (without res_pk), for inspection and insert."""
    out: dict[str, list[dict]] = {k: [] for k in INDEX_TABLES}
    for sp in registry.search_parameters_for(res_type).values():
        if not sp.indexed:
            continue
        try:
            if sp.type == "composite":
                _extract_composite(sp, resource, out)
                continue
            conv = CONVERTERS.get(sp.type)
            if conv is None:
                continue
            rows = conv(evaluate(sp.expression, resource))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - never fail a write on extraction
            log.warning("search extraction failed for %s.%s", res_type, sp.code, exc_info=True)
            continue
        for row in _dedupe(rows):
            row["param"] = sp.code
            row["grp"] = None
            out[sp.type].append(row)
    return out


def _dedupe(rows: Iterable[dict]) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        key = tuple(sorted((k, str(v)) for k, v in r.items()))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _extract_composite(sp: registry.SearchParam, resource: dict, out: dict[str, list[dict]]) -> None:
    """One group per combination of component values; components go to their type's table."""
    grp = 0
    for node, _ in evaluate(sp.expression, resource):  # type: ignore[arg-type]
        per_comp: list[list[dict]] = []
        for comp in sp.components:
            conv = CONVERTERS.get(comp.type)
            if conv is None:
                per_comp = []
                break
            rows = _dedupe(conv(evaluate(comp.expression, resource, node)))
            if comp.type == "token":  # text-only rows cannot be addressed in a composite
                rows = [r for r in rows if r["code"] is not None]
            per_comp.append(rows)
        if not per_comp or any(not rows for rows in per_comp):
            continue
        for combo in itertools.islice(itertools.product(*per_comp), MAX_COMPOSITE_COMBINATIONS):
            grp += 1
            for i, (comp, row) in enumerate(zip(sp.components, combo)):
                r = dict(row)
                r["param"] = f"{sp.code}${i}"
                r["grp"] = grp
                out[comp.type].append(r)
            out["composite"].append({"param": sp.code, "grp": grp,
                                     "components": orjson.dumps(list(combo), default=str).decode()})


def index_resource(conn: Connection, res_pk: int, res_type: str, resource: dict) -> None:
    """Insert the index rows of one resource (the resources row must exist)."""
    for kind, rows in extract(res_type, resource).items():
        if not rows:
            continue
        for r in rows:
            r["res_pk"] = res_pk
            r["res_type"] = res_type
        buffer_rows(conn, INDEX_TABLES[kind], rows)


def delete_index(conn: Connection, res_pk: int) -> None:
    """Remove every index row of a resource (before re-index, and on delete)."""
    flush(conn)
    for table in INDEX_TABLES.values():
        conn.execute(delete(table).where(table.c.res_pk == res_pk))
