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
# (subscriber, resource types it wants; None = all)
_subscribers: list[tuple[Subscriber, frozenset[str] | None]] = []


def subscribe(fn: Subscriber, types: tuple[str, ...] | None = None) -> Subscriber:
    """Call `fn(conn, change)` for every write (or only writes of `types`)."""
    if all(f is not fn for f, _t in _subscribers):
        _subscribers.append((fn, frozenset(types) if types else None))
    return fn


def unsubscribe(fn: Subscriber) -> None:
    _subscribers[:] = [(f, t) for f, t in _subscribers if f is not fn]


def has_subscribers(res_type: str | None = None) -> bool:
    """Whether any subscriber wants writes of `res_type` (any type when None)."""
    return any(t is None or res_type is None or res_type in t for _f, t in _subscribers)


def emit(conn: Connection, change: ResourceChange) -> None:
    for fn, types in list(_subscribers):
        if types is None or change.res_type in types:
            fn(conn, change)
