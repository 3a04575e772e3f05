"""A care unit's queue: its waiting Tasks in priority rank, then authoredOn.

Waiting = status requested, received, accepted or ready. Order: request-
priority rank high to low (stat, asap, urgent, routine; a Task without a
priority counts as routine, as R4 says of a missing Task.priority), then
authoredOn (earliest first; lastUpdated when absent), then id. The same order
as the search `Task?owner=...&status=requested,received,accepted,ready&_sort=-priority,authored-on`
(which puts a Task without priority last).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
from sqlalchemy import Connection

from ...search.ordered import codes_of
from ...storage import repository as repo

WAITING = ("requested", "received", "accepted", "ready")
PRIORITY_SYSTEM = "http://hl7.org/fhir/request-priority"


def rank(priority: str | None) -> int:
    codes = codes_of(PRIORITY_SYSTEM)
    return codes.index(priority) if priority in codes else codes.index("routine")


def _authored(task: dict) -> str:
    value = task.get("authoredOn") or (task.get("meta") or {}).get("lastUpdated") or ""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc).isoformat()
    except ValueError:
        return value


def queue_key(task: dict) -> tuple:
    return (-rank(task.get("priority")), _authored(task), task.get("id", ""))


def waiting_tasks(conn: Connection, owner: str) -> list[dict]:
    """The owner's waiting Tasks, in queue order."""
    from ...search.engine import find_matches

    pks = [pk for pk, _ in find_matches(conn, "Task", [("owner", owner), ("status", ",".join(WAITING))], limit=100_000)]
    tasks = [orjson.loads(s.content) for s in repo.read_by_pks(conn, pks) if s.content and not s.deleted]
    return sorted(tasks, key=queue_key)


@dataclass(frozen=True)
class Place:
    position: int | None  # 1-based; None when the Task is not waiting
    length: int  # waiting Tasks of the owner


def place_in_queue(conn: Connection, task: dict) -> Place:
    owner = (task.get("owner") or {}).get("reference")
    if not owner or task.get("status") not in WAITING:
        return Place(None, 0)
    queue = waiting_tasks(conn, owner)
    ids = [t.get("id") for t in queue]
    return Place(ids.index(task["id"]) + 1 if task.get("id") in ids else None, len(queue))
