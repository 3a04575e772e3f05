"""Search index rows of our own AuditEvents, without evaluating FHIRPath.

The generic extractor (`search.indexer.extract`) evaluates every AuditEvent search
parameter's FHIRPath expression: about 1.5 ms per event here, which at a thousand reads a
second would keep a whole core busy in the batch writer. The events this server writes have
one known shape (`audit.balp`), so the values each R4 AuditEvent parameter selects can be
picked straight from the dict and fed to the indexer's own converters (same normalisation,
same rows). `test_index_rows_match_the_generic_extractor` holds the two to the same rows.

When the AuditEvent parameters are not the standard set (a custom SearchParameter on
AuditEvent was activated), `rows()` returns None and the caller uses the generic path.
"""

from __future__ import annotations

import orjson

from ..search import indexer, registry
from ..search.fhirpath import split_type_id

# The R4 AuditEvent parameters (and the Resource/DomainResource ones) this module knows.
KNOWN = frozenset((
    "_content", "_id", "_lastUpdated", "_profile", "_query", "_security", "_source", "_tag", "_text",
    "action", "address", "agent", "agent-name", "agent-role", "altid", "date", "entity", "entity-name",
    "entity-role", "entity-type", "outcome", "patient", "policy", "site", "source", "subtype", "type",
))


def _each(items, key):
    for x in items:
        v = x.get(key) if isinstance(x, dict) else None
        if isinstance(v, list):
            yield from v
        elif v is not None:
            yield v


def _is_patient(ref) -> bool:
    """`where(resolve() is Patient)` as the generic extractor decides it (search.fhirpath):
    the reference's type segment (relative or absolute), else the Reference's `type`."""
    if not isinstance(ref, dict):
        return False
    r = ref.get("reference")
    rt = split_type_id(r)[0] if isinstance(r, str) else None
    return (rt if rt is not None else ref.get("type")) == "Patient"


def _values(e: dict) -> dict[str, tuple[str, list]]:
    agents = e.get("agent") or []
    entities = e.get("entity") or []
    meta = e.get("meta") or {}
    source = e.get("source") or {}
    who = list(_each(agents, "who"))
    what = list(_each(entities, "what"))
    return {
        "_profile": ("uri", list(meta.get("profile") or [])),
        "_security": ("token", list(meta.get("security") or [])),
        "_source": ("uri", [meta["source"]] if meta.get("source") else []),
        "_tag": ("token", list(meta.get("tag") or [])),
        "action": ("token", [e["action"]] if e.get("action") else []),
        "address": ("string", [n.get("address") for n in _each(agents, "network") if n.get("address")]),
        "agent": ("reference", who),
        "agent-name": ("string", list(_each(agents, "name"))),
        "agent-role": ("token", list(_each(agents, "role"))),
        "altid": ("token", list(_each(agents, "altId"))),
        "date": ("date", [e["recorded"]] if e.get("recorded") else []),
        "entity": ("reference", what),
        "entity-name": ("string", list(_each(entities, "name"))),
        "entity-role": ("token", list(_each(entities, "role"))),
        "entity-type": ("token", list(_each(entities, "type"))),
        "outcome": ("token", [e["outcome"]] if e.get("outcome") else []),
        "patient": ("reference", [w for w in who if _is_patient(w)] + [w for w in what if _is_patient(w)]),
        "policy": ("uri", list(_each(agents, "policy"))),
        "site": ("token", [source["site"]] if source.get("site") else []),
        "source": ("reference", [source["observer"]] if source.get("observer") else []),
        "subtype": ("token", list(e.get("subtype") or [])),
        "type": ("token", [e["type"]] if e.get("type") else []),
    }


def _converted(code: str, kind: str, values: list) -> tuple[list[dict], list[tuple]]:
    """The converter's rows for one parameter's values: as dicts (`rows`) and as tuples of the
    index table's columns after res_pk and res_type (`row_tuples`); cached, most values repeat
    from event to event (type, source, roles, ...)."""
    key = (code, orjson.dumps(values))
    entry = _cache.get(key)
    if entry is None:
        converted = indexer.CONVERTERS[kind]([(v, None) for v in values])
        if len(converted) > 1:
            converted = indexer._dedupe(converted)
        for row in converted:
            row["param"] = code
            row["grp"] = None
        columns = COLUMNS[kind][2:]
        entry = (converted, [tuple(row.get(c) for c in columns) for row in converted])
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[key] = entry
    return entry


def _standard() -> dict | None:
    """The AuditEvent parameters when they are the standard set this module knows, else None
    (decided again whenever the registry's answer is a new object: custom parameters changed)."""
    global _checked
    params = registry.search_parameters_for("AuditEvent")
    if _checked[0] is not params:
        _checked = (params, params if KNOWN.issuperset(params) else None)
    return _checked[1]


_checked: tuple = (None, None)  # (the registry's parameters, the answer for them)


def rows(event: dict) -> dict[str, list[dict]] | None:
    """The index rows of one of our AuditEvents, by index type, as `indexer.extract` gives
    them; None when the AuditEvent parameters differ from the standard set."""
    params = _standard()
    if params is None:
        return None
    out: dict[str, list[dict]] = {k: [] for k in indexer.INDEX_TABLES}
    for code, (kind, values) in _values(event).items():
        if values and code in params:
            out[kind].extend(dict(row) for row in _converted(code, kind, values)[0])  # copies: the writer adds res_pk to each
    return out


# The parameters whose values come from the event's agents, from its other fixed parts, and
# per event (entities, date); "patient" draws on agents and entities both.
_AGENT_CODES = ("address", "agent", "agent-name", "agent-role", "altid", "policy")
_HEAD_CODES = ("_profile", "_security", "_source", "_tag", "action", "outcome", "site", "source", "subtype", "type")
_ENTITY_CODES = ("entity-name", "entity-role", "entity-type")


def _refs_local(values: list) -> bool:
    """Whether references among `values` are all relative (an absolute one is turned local
    by the configured base: not cached)."""
    return not any(isinstance(v, dict) and "://" in str(v.get("reference") or "") for v in values)


def _group(kind_key: str, part, codes: tuple[str, ...], params) -> tuple[list[tuple[str, list[tuple]]], list]:
    """Rows of the parameters `codes` for one part of an event (its agents, or its fixed head),
    cached by that part's JSON: a portal user's events share their agents, and most events
    their type, subtype, action, outcome and source. Also the part's Patient references."""
    key = (kind_key, orjson.dumps(part))
    hit = _groups.get(key)
    if hit is not None:
        return hit
    values = _values(part if kind_key == "head" else {"agent": part})
    rows = [(values[c][0], _convert(c, values[c][0], values[c][1])) for c in codes if values[c][1] and c in params]
    who = [w for w in values["agent"][1] if _is_patient(w)] if kind_key == "agent" else []
    hit = ([(kind, t) for kind, t in rows if t], who)
    if _refs_local(values["agent"][1] + values["source"][1]):
        if len(_groups) >= _CACHE_SIZE:
            _groups.clear()
        _groups[key] = hit
    return hit


def _convert(code: str, kind: str, values: list) -> list[tuple]:
    """Tuples of one parameter's values, uncached (for per-event values)."""
    converted = indexer.CONVERTERS[kind]([(v, None) for v in values])
    if len(converted) > 1:
        converted = indexer._dedupe(converted)
    columns = COLUMNS[kind][4:]
    return [(code, None, *(row.get(c) for c in columns)) for row in converted]


def _reference_tuples(code: str, values: list) -> list[tuple]:
    """Tuples of a reference parameter's values, converted item by item (the converter is
    item-wise) with each item's rows cached by its reference, then de-duplicated like the
    generic extractor (first occurrence kept, rows equal when every column's str() is)."""
    out: list[tuple] = []
    for v in values:
        ref = v.get("reference") if isinstance(v, dict) else None
        key = (code, ref) if isinstance(ref, str) and "://" not in ref and len(v) == 1 else None
        rows = _items.get(key) if key is not None else None
        if rows is None:
            rows = _convert(code, "reference", [v])
            if key is not None:
                if len(_items) >= _CACHE_SIZE:
                    _items.clear()
                _items[key] = rows
        out.extend(rows)
    if len(out) > 1:
        seen: set[tuple] = set()
        unique = []
        for t in out:
            k = tuple(map(str, t[2:]))
            if k not in seen:
                seen.add(k)
                unique.append(t)
        out = unique
    return out


def row_tuples(event: dict) -> dict[str, list[tuple]] | None:
    """The same rows as `rows`, each a tuple of its table's columns `COLUMNS[kind][2:]` (param,
    grp, then the values; res_pk and res_type left out): what the batch insert of
    `audit.store` sends, without building a dict per row. Only the kinds that have rows are
    keys. None when the AuditEvent parameters differ from the standard set.

    Built by parts: the rows of the agents and of the fixed head are cached by their JSON;
    the entities' references item by item; the date per event; "patient" from the agents'
    and the entities' Patient references together. tests/audit/test_index_equivalence.py
    holds the result to the generic extractor's rows."""
    params = _standard()
    if params is None:
        return None
    out: dict[str, list[tuple]] = {}

    def add(kind: str, tuples: list[tuple]) -> None:
        lst = out.get(kind)
        if lst is None:
            out[kind] = list(tuples)
        else:
            lst.extend(tuples)

    meta = event.get("meta") or {}
    head_part = {"meta": {k: meta[k] for k in ("profile", "security", "source", "tag") if k in meta},
                 **{k: event[k] for k in ("action", "outcome", "source", "subtype", "type") if k in event}}
    for kind, tuples in _group("head", head_part, _HEAD_CODES, params)[0]:
        add(kind, tuples)
    agent_rows, who_patients = _group("agent", event.get("agent") or [], _AGENT_CODES, params)
    for kind, tuples in agent_rows:
        add(kind, tuples)
    recorded = event.get("recorded")
    if recorded and "date" in params:
        add("date", _convert("date", "date", [recorded]))
    entities = event.get("entity") or []
    what = list(_each(entities, "what"))
    if what and "entity" in params:
        add("reference", _reference_tuples("entity", what))
    for code in _ENTITY_CODES:
        if code in params:
            kind = "string" if code == "entity-name" else "token"
            values = list(_each(entities, {"entity-name": "name", "entity-role": "role", "entity-type": "type"}[code]))
            if values:
                add(kind, _converted(code, kind, values)[1])
    patients = who_patients + [w for w in what if _is_patient(w)]
    if patients and "patient" in params:
        add("reference", _reference_tuples("patient", patients))
    return out


_groups: dict[tuple, tuple[list, list]] = {}  # rows of an agents list / a fixed head, by its JSON; cleared when full
_items: dict[tuple, list[tuple]] = {}  # rows of one relative reference, by (parameter, reference); cleared when full


# Each index table's columns in insert order: res_pk, res_type, param, grp, then its values.
COLUMNS: dict[str, tuple[str, ...]] = {
    kind: ("res_pk", "res_type", "param", "grp") + tuple(c.name for c in table.columns if c.name not in ("id", "res_pk", "res_type", "param", "grp"))
    for kind, table in indexer.INDEX_TABLES.items()
}
_CACHE_SIZE = 4096
_cache: dict[tuple, tuple[list[dict], list[tuple]]] = {}  # converted rows per (parameter, values); cleared when full
