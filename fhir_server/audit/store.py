"""Writing AuditEvents into the resource store, and finding the patients data is about.

AuditEvents are ordinary stored resources (versioned, indexed by the R4 AuditEvent search
parameters), but they are written here directly rather than through the REST interactions:
their writes fire no change events and leave no AuditEvent of their own, so the access log
cannot feed itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

import orjson
from sqlalchemy import Connection, func, select, tuple_

from ..model.jsonguard import scrub
from ..storage import repository as repo
from ..storage.schema import idx_reference, resource_versions, resources
from .balp import clean_json

AUDIT_TYPE = "AuditEvent"
_CHUNK = 400  # (type, id) pairs per lookup: far below the bind-parameter limits


def insert_events(conn: Connection, events: Iterable[dict], count: int | None = None) -> None:
    """Store AuditEvent dicts (each with its id) as version 1, with their search index rows.
    `events` may be a generator (`count` then says how many): each event is serialised and
    dropped before the next is built, so a batch's dicts die young instead of being promoted
    through the garbage collector's generations (whose full collections cost a third of the
    batch's CPU when the batch was built first).

    A batch's index rows are built as tuples (`audit.index.row_tuples`) and sent per index
    table in one statement: SQLite an executemany of the driver's own SQL, PostgreSQL a COPY
    (or, for a few rows, the write buffer's single combined INSERT). The stored rows are
    exactly those the generic path (SQLAlchemy inserts of `audit.index.rows`' dicts, or
    `search.indexer.index_resource`) gives: tests/audit/test_index_equivalence.py."""
    from ..search.indexer import index_resource
    from .index import row_tuples

    batched: dict[str, list[tuple]] = {}
    if count is None:
        events = list(events)
        count = len(events)
    next_pk = _sqlite_next_pk(conn) if count > 1 else None
    base_rows: list[tuple] = []  # SQLite batch: (pk, res_id, last_updated, content) per event
    for event in events:
        recorded = _instant(event.get("recorded")) or datetime.now(timezone.utc)
        event["meta"] = {"versionId": "1", "lastUpdated": event.get("recorded"), **(event.get("meta") or {})}
        ordered = {"resourceType": AUDIT_TYPE, "id": event["id"], "meta": event["meta"], **event}
        content = clean_json(ordered)
        if content is None:  # a refused request may carry a NUL or a lone surrogate: stored as U+FFFD
            ordered = scrub(ordered)
            content = orjson.dumps(ordered)
        if next_pk is None:  # PostgreSQL: insert_resource buffers with pre-allocated keys already
            pk = repo.insert_resource(conn, AUDIT_TYPE, event["id"], 1, recorded, content, "POST")
        else:  # SQLite: one executemany per table for the batch instead of one round trip per event
            pk, next_pk = next_pk, next_pk + 1
            base_rows.append((pk, event["id"], recorded, content))
        by_kind = row_tuples(ordered)
        if by_kind is None:  # custom AuditEvent parameters: the generic extractor knows them
            if base_rows:
                _insert_base_rows(conn, base_rows)
                base_rows = []
            index_resource(conn, pk, AUDIT_TYPE, ordered)
            continue
        head = (pk, AUDIT_TYPE)
        for kind, tuples in by_kind.items():
            lst = batched.get(kind)
            if lst is None:
                lst = batched[kind] = []
            lst.extend([head + t for t in tuples])
    if base_rows:
        _insert_base_rows(conn, base_rows)
    _insert_index_rows(conn, batched)


def _insert_base_rows(conn: Connection, rows: list[tuple]) -> None:
    """SQLite: the resources and resource_versions rows of new AuditEvents (version 1)."""
    repo.flush(conn)  # rows buffered earlier in this transaction go first, in their order
    insert_rows(conn, resources, ("pk", "res_type", "res_id", "version_id", "last_updated", "deleted", "content"),
                 [(pk, AUDIT_TYPE, res_id, 1, at, False, content) for pk, res_id, at, content in rows])
    insert_rows(conn, resource_versions, ("res_pk", "res_type", "res_id", "version_id", "last_updated", "method", "deleted", "content"),
                 [(pk, AUDIT_TYPE, res_id, 1, at, "POST", False, content) for pk, res_id, at, content in rows])


def _insert_index_rows(conn: Connection, batched: dict[str, list[tuple]]) -> None:
    """Insert index rows given as tuples of `index.COLUMNS[kind]`, one statement per table."""
    from ..search.indexer import INDEX_TABLES
    from .index import COLUMNS

    if not batched:
        return
    if conn.dialect.name == "postgresql":
        if sum(len(v) for v in batched.values()) < repo.COPY_THRESHOLD:  # a few rows: the buffer's one combined INSERT
            for kind, rows in batched.items():
                cols = COLUMNS[kind]
                repo.buffer_rows(conn, INDEX_TABLES[kind], [dict(zip(cols, r)) for r in rows])
            return
        _copy(conn, batched)
        return
    for kind, rows in batched.items():
        insert_rows(conn, INDEX_TABLES[kind], COLUMNS[kind], rows)


_SQL: dict[tuple, tuple[str, list]] = {}


def insert_rows(conn: Connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert `rows` (tuples of `columns`) into `table` with one executemany of the driver's
    own INSERT, without SQLAlchemy's per-row parameter handling; each value passes the bind processor
    SQLAlchemy's own insert would apply (on SQLite: datetimes to its text form, booleans to
    integers, floats), so the stored values are the same."""
    if not rows:
        return
    dialect = conn.dialect
    key = (dialect.name, table.name, columns)
    entry = _SQL.get(key)
    if entry is None:
        marks = ", ".join(["?" if dialect.paramstyle == "qmark" else "%s"] * len(columns))
        procs = [(i, p) for i, c in enumerate(columns)
                 if (p := table.c[c].type.dialect_impl(dialect).bind_processor(dialect)) is not None]
        entry = _SQL[key] = (f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", procs)
    sql, procs = entry
    if procs:
        fixed = []
        for r in rows:
            r = list(r)
            for i, p in procs:
                v = r[i]
                if v is not None:
                    r[i] = p(v)
            fixed.append(tuple(r))
        rows = fixed
    conn.exec_driver_sql(sql, rows)


def _copy(conn: Connection, batched: dict[str, list[tuple]]) -> None:
    """PostgreSQL: each index table's rows streamed with COPY (database errors surface as
    SQLAlchemy's, as from any statement, so a refused batch is handled as before)."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    from ..search.indexer import INDEX_TABLES
    from .index import COLUMNS

    raw = conn.connection.dbapi_connection
    try:
        with raw.cursor() as cur:
            for kind, rows in batched.items():
                with cur.copy(f"COPY {INDEX_TABLES[kind].name} ({', '.join(COLUMNS[kind])}) FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(r)
    except psycopg.Error as exc:
        raise DBAPIError.instance("COPY (AuditEvent index rows)", None, exc, psycopg.Error) from exc


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


