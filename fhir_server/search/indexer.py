"""Write-time extraction of search values into the narrow idx_* tables.

Called inside the write transaction, so a search right after a write sees it.
A failing expression is logged and skipped: a write must never fail because a
search value could not be extracted.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import orjson
from sqlalchemy import Connection, delete

from ..storage.schema import INDEX_TABLES
from ..storage.repository import buffer_rows, flush
from . import local_base, national, registry
from .fhirpath import Item, bare_root, compile_expression, trigger_keys
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
        "system": system[:LEN_SYSTEM] if isinstance(system, str) else None,
        "code": code[:LEN_CODE] if isinstance(code, str) else None,
        "text_norm": normalize(text) if text and isinstance(text, str) else None,
        "type_system": tsys[:LEN_TYPE_SYSTEM] if isinstance(tsys, str) else None,
        "type_code": tcode[:LEN_TYPE_CODE] if isinstance(tcode, str) else None,
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
                if "://" in ref:  # an absolute reference to this server's own base is local
                    ref = local_base.local_form(ref) or ref
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


class _Plan:
    """What extraction does for one resource type, worked out once per parameter set.

    ``entries`` keeps the registry's order (so rows come out in the same order as
    evaluating every parameter in turn); ``by_key`` maps a top-level JSON key to the
    entries that can only yield something when that key is present, and ``always``
    lists the entries that must run whatever the resource holds.
    """

    __slots__ = ("params", "entries", "by_key", "always", "needs")

    def __init__(self, params: dict[str, registry.SearchParam]):
        self.params = params
        self.needs: dict[int, tuple[frozenset[str], ...]] = {}
        # (sp, compiled expression, converter; None for a composite)
        self.entries: list[tuple] = []
        by_key: dict[str, list[int]] = {}
        always: list[int] = []
        for sp in params.values():
            if not sp.indexed:
                continue
            if sp.type == "composite":
                conv = None
            else:
                conv = CONVERTERS.get(sp.type)
                if conv is None:
                    continue
            i = len(self.entries)
            self.entries.append((sp, compile_expression(sp.expression), conv))  # type: ignore[arg-type]
            if conv is None and bare_root(sp.expression):  # type: ignore[arg-type]
                # The one node is the resource: rows need every component, so each component's
                # keys must meet the resource's (a component with none of them yields nothing).
                # Skipping then gives the same rows; it only spares a warning should another
                # component's converter fail on malformed data.
                need = [trigger_keys(c.expression) for c in sp.components]
                if sp.components and all(k is not None for k in need):
                    self.needs[i] = tuple(need)  # type: ignore[arg-type]
            keys = trigger_keys(sp.expression)  # type: ignore[arg-type]
            if keys is None:
                always.append(i)
            else:
                for k in keys:
                    by_key.setdefault(k, []).append(i)
        self.by_key = {k: tuple(v) for k, v in by_key.items()}
        self.always = tuple(always)

    def selected(self, resource: dict) -> list[int]:
        """Indexes of the entries that can yield rows for ``resource``, in order."""
        if not isinstance(resource, dict):
            return list(range(len(self.entries)))
        by_key = self.by_key
        chosen = set(self.always)
        for k in resource:
            hit = by_key.get(k)
            if hit:
                chosen.update(hit)
        for i, need in self.needs.items():
            if i in chosen:
                for keys in need:
                    if keys.isdisjoint(resource):
                        chosen.discard(i)
                        break
        return sorted(chosen)


_plans: dict[str, _Plan] = {}


def _plan(res_type: str) -> _Plan:
    params = registry.search_parameters_for(res_type)
    plan = _plans.get(res_type)
    if plan is None or plan.params is not params:  # rebuilt when custom parameters change
        plan = _plans[res_type] = _Plan(params)
    return plan


def extract(res_type: str, resource: dict) -> dict[str, list[dict]]:
    """All index rows of a resource, by index type (without res_pk), for inspection and insert."""
    out: dict[str, list[dict]] = {k: [] for k in INDEX_TABLES}
    plan = _plan(res_type)
    entries = plan.entries
    memo: dict = {}  # composite component rows, by (node, expression, type)
    for i in plan.selected(resource):
        sp, ev, conv = entries[i]
        try:
            if conv is None:
                _extract_composite(sp, resource, out, ev, memo)
                continue
            items = ev(resource, resource)
            if not items:
                continue
            rows = conv(items)
        except Exception:  # noqa: BLE001 - never fail a write on extraction
            log.warning("search extraction failed for %s.%s", res_type, sp.code, exc_info=True)
            continue
        if not rows:
            continue
        code = sp.code
        target = out[sp.type]
        for row in _dedupe(rows) if len(rows) > 1 else rows:
            row["param"] = code
            row["grp"] = None
            target.append(row)
    return out


def _dedupe(rows: list[dict]) -> list[dict]:
    """Rows without repeats, first occurrence kept.

    Two rows are the same when every column's ``str()`` is; the key is the tuple of
    those strings in the row's column order, which every converter builds the same
    for all its rows (see test_extraction_speedups).
    """
    seen: set[tuple] = set()
    out = []
    for r in rows:
        key = tuple(map(str, r.values()))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _extract_composite(sp: registry.SearchParam, resource: dict, out: dict[str, list[dict]],
                       evaluator: Any = None, memo: dict | None = None) -> None:
    """One group per combination of component values; components go to their type's table.

    ``memo`` (one per extract() call) shares a component's rows between the parameters
    that evaluate the same component expression on the same node, e.g. Observation's
    `code` in all eight code-value composites. Rows are never mutated once made, so
    sharing them is safe; a failing evaluation is not memoised and fails again.
    """
    grp = 0
    nodes = (evaluator or compile_expression(sp.expression))(resource, resource)  # type: ignore[arg-type]
    if not nodes:
        return
    if memo is None:
        memo = {}
    comps = [(comp.expression, comp.type, CONVERTERS.get(comp.type)) for comp in sp.components]
    for node, _ in nodes:
        target = resource if node is None else node  # as evaluate() does
        per_comp: list[list[dict]] = []
        for expr, ctype, conv in comps:
            if conv is None:
                per_comp = []
                break
            key = (id(target), expr, ctype)
            hit = memo.get(key)
            if hit is not None and hit[0] is target:
                rows = hit[1]
            else:
                rows = _dedupe(conv(compile_expression(expr)(target, resource)))
                if ctype == "token":  # text-only rows cannot be addressed in a composite
                    rows = [r for r in rows if r["code"] is not None]
                memo[key] = (target, rows)  # holding target keeps its id from being reused
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
