"""Read events staged as one row each, turned into AuditEvents later (the access log's two steps).

Storing a read's AuditEvent means a resource row, a version row and about 25 search-index
rows, and building them costs about as much CPU as serving the read. Under a burst of
reads that work competes with the reads themselves. So the batch writer (`audit.writer`)
first *stages* each event: its facts as one JSON row in `audit_staged`, committed within
the flush interval, exactly as durable as an AuditEvent. `materialize` later turns staged
rows into AuditEvents and deletes them, in one transaction, so a row becomes exactly one
event even with several processes materializing (PostgreSQL: rows locked FOR UPDATE;
SQLite: its single write lock).

When it happens:
- in the writer's background loop, once the server is quiet (no event for `QUIET_SECONDS`),
  or when staged rows have waited `INDEX_LAG_SECONDS` (so under sustained load the log
  is indexed at least that often, and a backlog cannot grow without bound);
- before any request that may read AuditEvents (`audit.middleware`), the audit NDJSON
  export and a flush: nobody ever reads the log without the events staged before them.
"""

from __future__ import annotations

import logging
from datetime import datetime

import orjson
from sqlalchemy import Connection, delete, select
from sqlalchemy.exc import DataError, IntegrityError

from ..errors import FhirError
from ..storage.repository import flush
from ..storage.schema import audit_staged
from .balp import AuditFacts, to_resource
from .store import insert_events, insert_rows, patients_of_stored

QUIET_SECONDS = 0.25  # no event for this long: the server has time to index the log
INDEX_LAG_SECONDS = 10.0  # staged rows older than this are indexed even while events keep coming
BATCH = 500  # staged rows per materializing transaction

log = logging.getLogger("fhir_server.audit")


def encode(facts: AuditFacts, lookup: list[tuple[str, str]]) -> bytes:
    """One staged row: the facts (a dataclass, datetimes as RFC 3339) and the (type, id)
    pairs whose patients are looked up when the event is built."""
    return orjson.dumps({"f": facts, "l": lookup})


def decode(raw: bytes) -> tuple[AuditFacts, list[tuple[str, str]]]:
    doc = orjson.loads(raw)
    f = doc["f"]
    f["recorded"] = datetime.fromisoformat(f["recorded"])
    f["data"] = [tuple(pair) for pair in f.get("data") or ()]
    return AuditFacts(**f), [tuple(pair) for pair in doc.get("l") or ()]


def stage(conn: Connection, rows: list[bytes]) -> None:
    """Insert encoded events (one executemany: on SQLite, where the writer is a thread of the
    server, the driver's own, without SQLAlchemy's per-row parameter handling)."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        insert_rows(conn, audit_staged, ("facts",), [(raw,) for raw in rows])
    else:
        conn.execute(audit_staged.insert(), [{"facts": raw} for raw in rows])


def store_events(conn: Connection, items: list[tuple[AuditFacts, list[tuple[str, str]]]]) -> None:
    """Build and insert the AuditEvents of `items`, naming the patients each lookup's
    resources belong to (one indexed query for the whole batch). Each event is built as it is
    stored (a generator): see `insert_events`."""
    lookups = [p for _, lookup in items for p in lookup]
    patients = patients_of_stored(conn, lookups) if lookups else {}

    def events():
        for facts, lookup in items:
            found: list[str] = list(facts.patients)
            for pair in lookup:
                for pid in patients.get(pair, ()):
                    if pid not in found:
                        found.append(pid)
            facts.patients = found
            yield to_resource(facts, scrubbed=False)  # insert_events cleans it as it serialises it

    insert_events(conn, events(), len(items))


def materialize(conn: Connection, limit: int = BATCH, wait: bool = False) -> int:
    """Turn up to `limit` of the oldest staged rows into AuditEvents within `conn`'s write
    transaction and delete them; returns how many. On PostgreSQL rows another process is
    materializing are skipped (`wait` False, the background) or waited for (`wait` True:
    a reader of the log must see them)."""
    q = select(audit_staged.c.pk, audit_staged.c.facts).order_by(audit_staged.c.pk).limit(limit)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=not wait)
    rows = conn.execute(q).all()
    if not rows:
        return 0
    items = []
    for _, raw in rows:
        try:
            items.append(decode(bytes(raw)))
        except (ValueError, TypeError, KeyError):  # a row this version cannot read: dropped, not blocking the log
            log.error("a staged access-log row could not be read; dropped")
    if items and not _stored(conn, items):
        # the database refused the batch: store the events one by one, dropping (with an
        # error line) only those it refuses, so one bad event cannot block the log for good
        for item in items:
            if not _stored(conn, [item]):
                log.error("an access-log event was dropped: the database cannot store it")
    conn.execute(delete(audit_staged).where(audit_staged.c.pk.in_([pk for pk, _ in rows])))
    return len(rows)


def _stored(conn: Connection, items: list) -> bool:
    """Store `items` inside a savepoint; False (and nothing of them kept) when the database
    refuses them as invalid data (a 400), other errors propagate."""
    savepoint = conn.begin_nested()
    try:
        store_events(conn, items)
        flush(conn)  # buffered rows are sent now, so a refusal surfaces inside the savepoint
    except (DataError, IntegrityError):
        savepoint.rollback()
        return False
    except FhirError as exc:
        savepoint.rollback()
        if exc.status != 400:
            raise
        return False
    savepoint.commit()
    return True


def has_staged(db) -> bool:
    """Whether any row waits (a read: no write lock taken when the answer is no)."""
    return db.run_read(lambda conn: conn.execute(select(audit_staged.c.pk).limit(1)).first() is not None)


def materialize_all(db) -> int:
    """Every row staged so far becomes an AuditEvent before this returns (also those another
    process is materializing right now: their commit is waited for); returns how many here."""
    if not has_staged(db):
        return 0
    total = 0
    while True:
        with db.write() as conn:
            n = materialize(conn, BATCH, wait=True)
        total += n
        if n < BATCH:
            return total
