"""In-transaction change hooks: the seam for outboxes, subscriptions and audit.

Subscribers run inside the write's database transaction, so whatever they
record (an HL7 outbox row, an audit entry) commits or rolls back with the write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Connection


@dataclass(frozen=True)
class ResourceChange:
    res_type: str
    res_id: str
    version_id: int
    method: str  # create | update | patch | delete
    old: dict | None  # previous current version (None on create)
    new: dict | None  # new version (None on delete)


Subscriber = Callable[[Connection, ResourceChange], None]
_subscribers: list[Subscriber] = []


def subscribe(fn: Subscriber) -> Subscriber:
    if fn not in _subscribers:
        _subscribers.append(fn)
    return fn


def unsubscribe(fn: Subscriber) -> None:
    if fn in _subscribers:
        _subscribers.remove(fn)


def has_subscribers() -> bool:
    return bool(_subscribers)


def emit(conn: Connection, change: ResourceChange) -> None:
    for fn in list(_subscribers):
        fn(conn, change)
