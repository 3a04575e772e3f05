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
    return isinstance(ref, dict) and isinstance(ref.get("reference"), str) and ref["reference"].startswith("Patient/")


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


def _standard() -> frozenset | None:
    """The AuditEvent parameters when they are the standard set this module knows, else None."""
    params = registry.search_parameters_for("AuditEvent")
    return params if KNOWN.issuperset(params) else None


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


def row_tuples(event: dict) -> dict[str, list[tuple]] | None:
    """The same rows as `rows`, each a tuple of its table's columns `COLUMNS[kind][2:]` (param,
    grp, then the values; res_pk and res_type left out): what the batch insert of
    `audit.store` sends, without building a dict per row. Only the kinds that have rows are
    keys. None when the AuditEvent parameters differ from the standard set."""
    params = _standard()
    if params is None:
        return None
    out: dict[str, list[tuple]] = {}
    for code, (kind, values) in _values(event).items():
        if values and code in params:
            tuples = _converted(code, kind, values)[1]
            if tuples:
                lst = out.get(kind)
                if lst is None:
                    out[kind] = list(tuples)
                else:
                    lst.extend(tuples)
    return out


# Each index table's columns in insert order: res_pk, res_type, param, grp, then its values.
COLUMNS: dict[str, tuple[str, ...]] = {
    kind: ("res_pk", "res_type", "param", "grp") + tuple(c.name for c in table.columns if c.name not in ("id", "res_pk", "res_type", "param", "grp"))
    for kind, table in indexer.INDEX_TABLES.items()
}
_CACHE_SIZE = 4096
_cache: dict[tuple, tuple[list[dict], list[tuple]]] = {}  # converted rows per (parameter, values); cleared when full
