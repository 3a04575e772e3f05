"""Reading and rewriting resources from inside a write transaction.

Booking changes a Slot's status (and the hold job cancels an Appointment)
as a consequence of another write. These go through the engine's own store
step, so they get a version, history, search indexes and change events like
any client write, in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Connection

from ...model import jsonio
from ...storage import repository as repo


def read(conn: Connection, res_type: str, res_id: str, for_update: bool = False) -> dict | None:
    """The current, not deleted, version as plain JSON (None if absent)."""
    stored = repo.read_current(conn, res_type, res_id, for_update=for_update)
    if stored is None or stored.deleted or not stored.content:
        return None
    return jsonio.parse_plain(stored.content)


def rewrite(conn: Connection, res_type: str, res_id: str, change: Callable[[dict], bool], method: str = "update") -> dict | None:
    """Apply `change(preserving_json)` to the current version and store it as a
    new version if `change` returns True. Returns the new plain JSON (or None)."""
    from ...rest.context import RequestContext
    from ...rest.interactions import ParsedResource, _store

    stored = repo.read_current(conn, res_type, res_id, for_update=True)
    if stored is None or stored.deleted or not stored.content:
        return None
    doc = jsonio.parse_preserving(stored.content)
    if not change(doc):
        return None
    parsed = ParsedResource.from_preserving(doc)
    _store(conn, RequestContext(base_url=""), res_type, res_id, parsed, stored, method, [])
    return parsed.plain


def instant(value: str | None) -> datetime | None:
    """A FHIR instant/dateTime as an aware UTC datetime (None when absent or partial)."""
    if not value or "T" not in value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def fhir_instant(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
