"""Writing AuditEvents into the resource store, and finding the patients data is about.

AuditEvents are ordinary stored resources (versioned, indexed by the R4 AuditEvent search
parameters), but they are written here directly rather than through the REST interactions:
their writes fire no change events and leave no AuditEvent of their own, so the access log
cannot feed itself.
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
from sqlalchemy import Connection, func, select, tuple_

from ..storage import repository as repo
from ..storage.schema import idx_reference, resource_versions, resources

AUDIT_TYPE = "AuditEvent"
_CHUNK = 400  # (type, id) pairs per lookup: far below the bind-parameter limits


def insert_events(conn: Connection, events: list[dict]) -> None:
    """Store AuditEvent dicts (each with its id) as version 1, with their search index rows."""
    from ..search.indexer import INDEX_TABLES, index_resource
    from .index import rows as index_rows

    batched: dict[str, list[dict]] = {}
    next_pk = _sqlite_next_pk(conn) if len(events) > 1 else None
    for event in events:
        recorded = _instant(event.get("recorded")) or datetime.now(timezone.utc)
        event["meta"] = {"versionId": "1", "lastUpdated": event.get("recorded"), **(event.get("meta") or {})}
        ordered = {"resourceType": AUDIT_TYPE, "id": event["id"], "meta": event["meta"], **event}
        content = orjson.dumps(ordered)
        if next_pk is None:  # PostgreSQL: insert_resource buffers with pre-allocated keys already
            pk = repo.insert_resource(conn, AUDIT_TYPE, event["id"], 1, recorded, content, "POST")
        else:  # SQLite: one multi-row insert for the batch instead of one round trip per event
            pk, next_pk = next_pk, next_pk + 1
            repo.buffer_rows(conn, resources, [{"pk": pk, "res_type": AUDIT_TYPE, "res_id": event["id"], "version_id": 1,
                                                "last_updated": recorded, "deleted": False, "content": content}])
            repo.buffer_rows(conn, resource_versions, [{"res_pk": pk, "res_type": AUDIT_TYPE, "res_id": event["id"], "version_id": 1,
                                                        "last_updated": recorded, "method": "POST", "deleted": False, "content": content}])
        by_kind = index_rows(ordered)
        if by_kind is None:  # custom AuditEvent parameters: the generic extractor knows them
            index_resource(conn, pk, AUDIT_TYPE, ordered)
            continue
        for kind, rows in by_kind.items():
            for r in rows:
                r["res_pk"] = pk
                r["res_type"] = AUDIT_TYPE
            batched.setdefault(kind, []).extend(rows)
    for kind, rows in batched.items():
        repo.buffer_rows(conn, INDEX_TABLES[kind], rows)  # one multi-row insert per index table


def _sqlite_next_pk(conn: Connection) -> int | None:
    """The next free resources key on SQLite, inside a write transaction (BEGIN IMMEDIATE holds
    the database's write lock, so no other writer can take it meanwhile); None elsewhere or
    when the connection does not buffer."""
    if conn.dialect.name != "sqlite" or not conn.info.get("fhir_buffering"):
        return None
    repo.flush(conn)  # keys of rows buffered earlier in this transaction
    return (conn.execute(select(func.max(resources.c.pk))).scalar() or 0) + 1


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def patients_of_stored(conn: Connection, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """For stored resources (type, id): the Patient ids whose compartment holds each one
    (R4 CompartmentDefinition/patient, answered from the reference index). A Patient is
    its own patient; a resource not found (or outside every compartment) maps to []."""
    from ..operations import compartment_ref_condition, patient_compartment

    out: dict[tuple[str, str], list[str]] = {}
    wanted = []
    comp = patient_compartment()
    for t, i in dict.fromkeys(pairs):
        if t == "Patient":
            out[(t, i)] = [i]
        elif t in comp:
            wanted.append((t, i))
    r = resources.c
    ref = idx_reference
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        q = (
            select(r.res_type, r.res_id, ref.c.target_id)
            .select_from(resources.join(ref, ref.c.res_pk == r.pk))
            .where(tuple_(r.res_type, r.res_id).in_(chunk), compartment_ref_condition({t for t, _ in chunk}))
        )
        for res_type, res_id, target in conn.execute(q):
            if target:
                lst = out.setdefault((res_type, res_id), [])
                if target not in lst:
                    lst.append(target)
    return out


def patients_of_resource(res_type: str, resource: dict | None) -> list[str]:
    """The Patient ids a resource in hand belongs to (its compartment parameters' references)."""
    from ..search.membership import patients_of

    return patients_of(res_type, resource)


def delete_before(conn: Connection, cutoff: datetime, limit: int) -> int:
    """Remove up to `limit` AuditEvents recorded before `cutoff` (rows, versions, index rows);
    returns how many went. Retention is the one place stored resources are removed."""
    from ..search.indexer import INDEX_TABLES
    from ..storage.schema import resource_versions

    r = resources.c
    pks = [row[0] for row in conn.execute(
        select(r.pk).where(r.res_type == AUDIT_TYPE, r.last_updated < cutoff).order_by(r.pk).limit(limit))]
    if not pks:
        return 0
    for table in INDEX_TABLES.values():
        conn.execute(table.delete().where(table.c.res_pk.in_(pks)))
    conn.execute(resource_versions.delete().where(resource_versions.c.res_pk.in_(pks)))
    conn.execute(resources.delete().where(r.pk.in_(pks)))
    return len(pks)


