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
# Subscribers to some resource types only: writes of other types do not pay for them.
_typed: dict[str, list[Subscriber]] = {}


def subscribe(fn: Subscriber, types: tuple[str, ...] | None = None) -> Subscriber:
    """Call `fn` on every change, or (types) on changes of those resource types only."""
    if types is None:
        if fn not in _subscribers:
            _subscribers.append(fn)
        return fn
    for t in types:
        fns = _typed.setdefault(t, [])
        if fn not in fns:
            fns.append(fn)
    return fn


def unsubscribe(fn: Subscriber) -> None:
    if fn in _subscribers:
        _subscribers.remove(fn)
    for fns in _typed.values():
        if fn in fns:
            fns.remove(fn)


def has_subscribers(res_type: str | None = None) -> bool:
    """Whether a change (of `res_type`, or of any type when None) has listeners."""
    if _subscribers:
        return True
    if res_type is None:
        return any(_typed.values())
    return bool(_typed.get(res_type))


def emit(conn: Connection, change: ResourceChange) -> None:
    for fn in [*_subscribers, *_typed.get(change.res_type, ())]:
        fn(conn, change)
