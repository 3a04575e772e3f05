"""`fhir-server audit export`: the access log as NDJSON (one AuditEvent per line).

Reads the stored AuditEvents in the order they were recorded, `since` inclusive and
`until` exclusive (UTC instants or dates), streaming in pages of `PAGE` so memory stays
flat whatever the size of the log. The lines are the stored JSON, byte for byte.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import IO, Iterator

from sqlalchemy import select

from ..storage.schema import resources
from .store import AUDIT_TYPE

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
    from .staging import materialize_all

    materialize_all(db)  # staged read events first: the export holds everything logged so far
    r = resources.c
    last_pk = 0
    while True:
        q = select(r.pk, r.content).where(r.res_type == AUDIT_TYPE, r.deleted.is_(False), r.pk > last_pk)
        if since is not None:
            q = q.where(r.last_updated >= since)
        if until is not None:
            q = q.where(r.last_updated < until)
        with db.read() as conn:
            rows = conn.execute(q.order_by(r.pk).limit(PAGE)).all()
        for pk, content in rows:
            last_pk = pk
            if content:
                yield bytes(content)
        if len(rows) < PAGE:
            return


def export_ndjson(db, out: IO[bytes], since: datetime | None = None, until: datetime | None = None) -> int:
    """Write the events to the binary stream `out`; returns how many."""
    n = 0
    for line in iter_events(db, since, until):
        out.write(line.replace(b"\n", b" ") + b"\n")
        n += 1
    return n
