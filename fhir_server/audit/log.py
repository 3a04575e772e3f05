"""The access log's store: one compact row per AuditEvent, rendered as the AuditEvent when read.

A row of `audit_log` holds what searches filter on (recorded, type, subtype, action, outcome)
and a compact document: for an event this server logged, its facts as a row (`[[values in
balp.FACT_FIELDS order], []]`, about 250 bytes; events stored by earlier versions hold
`{"f": {field: value}}` and still render), from which `render` builds the BALP AuditEvent (`balp.to_resource`)
each time it is read; for an event an audit source sent (`POST [base]/AuditEvent`), the
resource as received (`{"r": ...}`). The references and identifiers of its agents and entities are
rows of `audit_log_refs`, one per value, with bits saying where the value occurs (ROLE_*).

Why not ordinary resources: a stored resource is a resource row, a version row and ~25
search-index rows; building and writing them cost more CPU than the read being logged
(docs/audit.md has the figures). An event here is one row and about five small ones, and it
is searchable as soon as it is written: there is no second, indexing step.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import orjson
from sqlalchemy import Connection, func, select, text

from ..errors import FhirError
from ..ids import new_time_ordered_id
from ..storage.planner_statistics import count_inserted
from ..storage.schema import audit_log, audit_log_refs
from ..model.jsonguard import scrub
from .balp import _KIND_TYPE, DCM, FACT_FIELDS, INTERACTION, AuditFacts, clean_json, facts_row, to_resource

AUDIT_TYPE = "AuditEvent"

ROLE_ENTITY = 1  # entity.what.reference (versionless Type/id)
ROLE_AGENT = 2  # agent.who.reference
ROLE_ENTITY_ID = 4  # entity.what.identifier.value (the BALP X-Request-Id entity)
ROLE_AGENT_ID = 8  # agent.who.identifier.value (a token subject without fhirUser, an OAuth client_id)
ROLE_ALTID = 16  # agent.altId
ROLE_SUBTYPE = 32  # a subtype after the first, as system|code

MAIN_COLUMNS = ("pk", "id", "recorded", "last_updated", "type_system", "type_code", "subtype_system",
                "subtype_code", "action", "outcome", "doc")
REF_COLUMNS = ("event_pk", "value", "roles")
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_VALUE_MAX = 512


class Entry:
    """One event ready to insert: its main-row values (without pk) and its reference rows."""

    __slots__ = ("main", "refs")

    def __init__(self, main: tuple, refs: dict[str, int]):
        self.main = main
        self.refs = refs


def refuse_change(res_type: str, method: str) -> None:
    """405 for an update, patch or delete of an AuditEvent (any route)."""
    if res_type == AUDIT_TYPE:
        raise FhirError.of(405, "not-supported", f"AuditEvents cannot be changed or deleted ({method} refused): "
                           "the access log is append-only")


def _clean(value: str) -> str:
    value = value[:_VALUE_MAX]
    if value.isascii() and value.isprintable():  # the common case: nothing to replace
        return value
    return _BAD.sub("\ufffd", value) if _BAD.search(value) else value


def _add(refs: dict[str, int], value: str | None, role: int) -> None:
    if value:
        value = _clean(value)
        refs[value] = refs.get(value, 0) | role


def _versionless(ref: str) -> str:
    head, sep, _ = ref.partition("/_history/")
    return head


def encode_row(row, lookup=()) -> bytes:
    """One event as the writers queue and hand it on: `[row, [[type, id], ...]]` as JSON
    bytes, `row` the facts' values in balp.FACT_FIELDS order and the pairs the stored
    resources whose patients the event names (`decode_row` reads it back). Bytes, not
    objects: a second of queued events is not walked by the garbage collector, and the
    process writer sends them without pickling each; a row, not the dataclass: the edge
    encodes one per request, in 0.25 us instead of 1.7."""
    raw = clean_json((row, lookup))
    if raw is None:  # a refused request may carry a NUL or a lone surrogate: kept as U+FFFD
        raw = orjson.dumps(scrub([list(row), [list(p) for p in lookup]]))
    return raw


def decode_row(raw: bytes) -> tuple[dict, list]:
    """(the facts as a dict of FACT_FIELDS, the lookup pairs) of an `encode_row`d event."""
    row, lookup = orjson.loads(raw)
    return dict(zip(FACT_FIELDS, row)), lookup


def entry_of_facts(facts: AuditFacts, event_id: str | None = None) -> Entry:
    """The row of an event this server logged (`facts.patients` already resolved)."""
    raw = encode_row(facts_row(facts))
    return entry_of_fields(decode_row(raw)[0], event_id, doc=raw)


def entry_of_fields(f: dict, event_id: str | None = None, doc: bytes | None = None) -> Entry:
    """The row of an event from its facts as decoded JSON (`decode_row`; `patients` resolved).
    `doc`: the stored document when the caller has it already (the event's `encode_row` bytes
    with nothing left to look up: a read's event is stored as it was queued)."""
    system, code, _ = _KIND_TYPE[f["kind"]]
    subtype = f["subtype"]
    if f["kind"] == "login":
        sub_system, sub_code = DCM, "110122"
    else:
        sub_system, sub_code = INTERACTION, "operation" if subtype.startswith("$") else subtype
    refs: dict[str, int] = {}
    for pid in f["patients"]:
        _add(refs, f"Patient/{pid}", ROLE_ENTITY)
    for res_type, res_id in f["data"]:
        _add(refs, f"{res_type}/{_versionless(res_id)}", ROLE_ENTITY)
    _add(refs, f["request_id"], ROLE_ENTITY_ID)
    fhir_user = f["fhir_user"]
    _add(refs, fhir_user, ROLE_AGENT)
    behalf = f["acting_for"] or (f"Patient/{f['context_patient']}" if f["context_patient"] else None)
    if behalf and behalf != fhir_user:
        _add(refs, behalf, ROLE_AGENT)
    if f["subject"]:
        _add(refs, f["subject"], ROLE_ALTID | (0 if fhir_user else ROLE_AGENT_ID))
    _add(refs, f["client_id"], ROLE_AGENT_ID)
    recorded = datetime.fromisoformat(f["recorded"])
    status = f["status"]
    outcome = "0" if status < 400 else "4" if status < 500 else "8"
    main = (event_id or new_time_ordered_id(), recorded, recorded, system, code, sub_system, sub_code, f["action"],
            outcome, doc if doc is not None else encode_row([f[k] for k in FACT_FIELDS]))
    return Entry(main, refs)


def entry_of_resource(resource: dict, last_updated: datetime) -> Entry:
    """The row of an AuditEvent an audit source sent (already validated; `id` and `meta` set)."""
    refs: dict[str, int] = {}
    for agent in resource.get("agent") or ():
        who = agent.get("who") or {}
        _add(refs, who.get("reference") and _versionless(who["reference"]), ROLE_AGENT)
        _add(refs, (who.get("identifier") or {}).get("value"), ROLE_AGENT_ID)
        _add(refs, agent.get("altId"), ROLE_ALTID)
    for entity in resource.get("entity") or ():
        what = entity.get("what") or {}
        _add(refs, what.get("reference") and _versionless(what["reference"]), ROLE_ENTITY)
        _add(refs, (what.get("identifier") or {}).get("value"), ROLE_ENTITY_ID)
    ev_type = resource.get("type") or {}
    subtypes = resource.get("subtype") or [{}]
    for extra in subtypes[1:]:  # searched as system|code or as the code alone
        _add(refs, f"{extra.get('system', '')}|{extra.get('code', '')}", ROLE_SUBTYPE)
        _add(refs, extra.get("code"), ROLE_SUBTYPE)
    recorded = _instant(resource.get("recorded")) or last_updated
    main = (resource["id"], recorded, last_updated, ev_type.get("system"), ev_type.get("code"),
            subtypes[0].get("system"), subtypes[0].get("code"), resource.get("action"), resource.get("outcome"),
            orjson.dumps({"r": resource}))
    return Entry(main, refs)


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def insert(conn: Connection, entries: list[Entry]) -> None:
    """Insert events inside `conn`'s transaction. SQLite: both tables at once, one executemany
    each. PostgreSQL: keys from a block of sequence values the connection holds, the rows into
    the write buffer (storage.repository: sent with the transaction's other rows in one
    statement at commit, or by COPY when there are many: the batch writer's)."""
    if not entries:
        return
    pks = _new_keys(conn, len(entries))
    mains = [(pk, *e.main) for pk, e in zip(pks, entries)]
    refs = [(pk, value, roles) for pk, e in zip(pks, entries) for value, roles in e.refs.items()]
    if conn.dialect.name == "postgresql":
        if len(entries) >= _COPY_MIN:  # the batch writer's: straight into COPY, no row dicts
            _copy(conn, mains, refs)
            return
        from ..storage.repository import buffer_rows

        buffer_rows(conn, audit_log, [dict(zip(MAIN_COLUMNS, r)) for r in mains])
        buffer_rows(conn, audit_log_refs, [dict(zip(REF_COLUMNS, r)) for r in refs])
        return
    from .store import insert_rows

    insert_rows(conn, audit_log, MAIN_COLUMNS, mains)
    insert_rows(conn, audit_log_refs, REF_COLUMNS, refs)


_COPY_MIN = 32  # events from which a PostgreSQL insert is a COPY of its own (a write's few ride with its rows)


def _copy(conn: Connection, mains: list[tuple], refs: list[tuple]) -> None:
    """PostgreSQL: both tables' rows by COPY (storage.repository.copy_rows), as tuples (a dict
    per row for the write buffer cost the batch writer more than COPY itself) in COPY's binary
    format, every value being its column's type already: bench/bench_audit_copy.py, per read
    event, the COPY calls' CPU 10-12 -> 4-6 us, PostgreSQL's 29-30 -> 27-29 us."""
    from ..storage.repository import binary_copy_types, copy_rows

    global _BINARY_TYPES
    if _BINARY_TYPES is None:
        _BINARY_TYPES = (binary_copy_types(audit_log, MAIN_COLUMNS), binary_copy_types(audit_log_refs, REF_COLUMNS))
    count_inserted(conn, (("audit_log", len(mains)), ("audit_log_refs", len(refs))))
    copy_rows(conn, "audit_log", MAIN_COLUMNS, mains, _BINARY_TYPES[0])
    copy_rows(conn, "audit_log_refs", REF_COLUMNS, refs, _BINARY_TYPES[1])


_BINARY_TYPES: tuple[list[str], list[str]] | None = None


_PK_POOL = "fhir_audit_pk_pool"
_PK_BLOCK = 500


def _new_keys(conn: Connection, n: int) -> list[int]:
    if conn.dialect.name == "postgresql":  # gaps are harmless: keys need only be unique and increasing
        pool = conn.info.setdefault(_PK_POOL, [])
        if len(pool) < n:
            values = conn.execute(text("SELECT nextval(pg_get_serial_sequence('audit_log', 'pk')) FROM generate_series(1, :n)"),
                                  {"n": max(n - len(pool), _PK_BLOCK)}).scalars().all()
            pool[:0] = sorted(values, reverse=True)  # popped from the end: the smallest first
        return [pool.pop() for _ in range(n)]
    # SQLite: inside a write transaction (BEGIN IMMEDIATE holds the one write lock)
    start = (conn.execute(select(func.max(audit_log.c.pk))).scalar() or 0) + 1
    return list(range(start, start + n))


# ---------------------------------------------------------------------------- reading

def render(event_id: str, doc: bytes) -> bytes:
    """The AuditEvent (R4 JSON bytes) of a stored row."""
    data = orjson.loads(doc)
    if isinstance(data, list):  # [facts row, []]: the queued form (rows stored before a field was added are shorter)
        f = dict(zip(FACT_FIELDS, data[0]))
    elif "r" in data:
        return orjson.dumps(data["r"])
    else:
        f = data["f"]  # {"f": facts}: events stored by earlier versions
    f["recorded"] = datetime.fromisoformat(f["recorded"])
    f["data"] = [tuple(pair) for pair in f.get("data") or ()]
    event = to_resource(AuditFacts(**f), event_id=event_id)
    recorded = event["recorded"]
    meta = {"versionId": "1", "lastUpdated": recorded, **(event.get("meta") or {})}
    return orjson.dumps({"resourceType": AUDIT_TYPE, "id": event_id, "meta": meta, **event})


def read(conn: Connection, event_id: str) -> tuple[int, datetime, bytes] | None:
    """(pk, last_updated, AuditEvent bytes) of the event `event_id`, or None."""
    a = audit_log.c
    row = conn.execute(select(a.pk, a.last_updated, a.doc).where(a.id == event_id)).first()
    if row is None:
        return None
    return row.pk, row.last_updated, render(event_id, bytes(row.doc))


def delete_before(conn: Connection, cutoff: datetime, limit: int) -> int:
    """Remove up to `limit` events recorded before `cutoff` (retention); returns how many."""
    a = audit_log.c
    pks = [r[0] for r in conn.execute(select(a.pk).where(a.recorded < cutoff).order_by(a.pk).limit(limit))]
    if not pks:
        return 0
    conn.execute(audit_log_refs.delete().where(audit_log_refs.c.event_pk.in_(pks)))
    conn.execute(audit_log.delete().where(a.pk.in_(pks)))
    return len(pks)

