"""Writes a workflow makes itself, as the system, in the caller's transaction.

A booking sets a Slot busy, a notification writes its CommunicationRequest and
Communication: these consequences of a client's write are not the client's
own interactions, so they are not authorised against the client. They take
the engine's store step all the same: validation (for new resources), a
version, history, search indexes and change events.
"""

from __future__ import annotations

import uuid
from typing import Callable

import orjson
from sqlalchemy import Connection

from ..model import jsonio
from ..storage import repository as repo
from .context import RequestContext
from .interactions import ParsedResource, _store, _validate

_SYSTEM = RequestContext(base_url="")


def read(conn: Connection, res_type: str, res_id: str, for_update: bool = False) -> dict | None:
    """The current, not deleted, version as plain JSON (None if absent)."""
    stored = repo.read_current(conn, res_type, res_id, for_update=for_update)
    if stored is None or stored.deleted or not stored.content:
        return None
    return orjson.loads(stored.content)  # written by us, checked when it was written


def create(conn: Connection, resource: dict, res_id: str | None = None) -> str:
    """Validate and store a new resource; returns its id. Raises FhirError (400) if invalid."""
    res_type = resource["resourceType"]
    parsed = ParsedResource.from_preserving(jsonio.parse_preserving(jsonio.dumps(resource)))
    _validate(res_type, parsed)
    new_id = res_id or str(uuid.uuid4())
    _store(conn, _SYSTEM, res_type, new_id, parsed, None, "create", [])
    return new_id


def rewrite(conn: Connection, res_type: str, res_id: str, change: Callable[[dict], bool]) -> dict | None:
    """Apply `change(json)` to the current version (locked) and store the result
    as a new version if `change` returns True. Returns the new JSON, or None."""
    stored = repo.read_current(conn, res_type, res_id, for_update=True)
    if stored is None or stored.deleted or not stored.content:
        return None
    doc = jsonio.parse_preserving(stored.content)
    if not change(doc):
        return None
    parsed = ParsedResource.from_preserving(doc)
    _store(conn, _SYSTEM, res_type, res_id, parsed, stored, "update", [])
    return parsed.plain
