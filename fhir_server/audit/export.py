"""`fhir-server audit export`: the access log as NDJSON (one AuditEvent per line).

Reads the logged AuditEvents in the order they were written, `since` inclusive and
`until` exclusive (UTC instants or dates), streaming in pages of `PAGE` so memory stays
flat whatever the size of the log. Each line is the event as a read of it answers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import IO, Iterator

from sqlalchemy import select

from ..storage.schema import audit_log
from .log import render

PAGE = 1000


def parse_bound(text: str | None) -> datetime | None:
    """A FHIR date or instant (`2026-01-31`, `2026-01-31T10:00:00Z`) as an aware UTC datetime."""
    if not text:
        return None
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def iter_events(db, since: datetime | None = None, until: datetime | None = None) -> Iterator[bytes]:
    a = audit_log.c
    last_pk = 0
    while True:
        q = select(a.pk, a.id, a.doc).where(a.pk > last_pk)
        if since is not None:
            q = q.where(a.recorded >= since)
        if until is not None:
            q = q.where(a.recorded < until)
        with db.read() as conn:
            rows = conn.execute(q.order_by(a.pk).limit(PAGE)).all()
        for pk, event_id, doc in rows:
            last_pk = pk
            yield render(event_id, bytes(doc))
        if len(rows) < PAGE:
            return


def export_ndjson(db, out: IO[bytes], since: datetime | None = None, until: datetime | None = None) -> int:
    """Write the events to the binary stream `out`; returns how many."""
    n = 0
    for line in iter_events(db, since, until):
        out.write(line.replace(b"\n", b" ") + b"\n")
        n += 1
    return n
