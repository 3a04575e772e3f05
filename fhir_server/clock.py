"""The server's one clock: UTC now, replaceable so that tests control time.

Booking windows, hold expiry, reminder times and the job queue's due times all
read `now()`, so a test that sets the clock moves all of them together.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

_source: Callable[[], datetime] | None = None


def now() -> datetime:
    """The current instant, timezone-aware UTC."""
    if _source is not None:
        return _source().astimezone(timezone.utc)
    return datetime.now(timezone.utc)


class FixedClock:
    """A clock that stands still until moved: `advance(minutes=5)`, `set(dt)`."""

    def __init__(self, start: datetime):
        self.value = start if start.tzinfo else start.replace(tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.value

    def set(self, value: datetime) -> None:
        self.value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    def advance(self, **delta: float) -> None:
        self.value = self.value + timedelta(**delta)


@contextmanager
def frozen(start: datetime) -> Iterator[FixedClock]:
    """`with clock.frozen(dt) as c:` — every reader of `now()` sees `c`."""
    global _source
    previous = _source
    fixed = FixedClock(start)
    _source = fixed
    try:
        yield fixed
    finally:
        _source = previous
