"""Bounded retry of a whole write transaction that lost a race with another writer.

PostgreSQL aborts one of two transactions that wait on each other
(`40P01 deadlock_detected`) or whose snapshot became stale
(`40001 serialization_failure`); SQLite may answer `database is locked` when a
writer from another process holds the file too long; two writers creating the
same resource at once lose a unique-key race (WriteConflict). None of these is
the client's fault and nothing of the aborted attempt was written, so the work
is run again, on a fresh copy of its input, a few times with a short random
backoff. When every attempt loses, the answer is 503 (issue code `transient`,
`Retry-After`) for a deadlock or lock timeout, and 409 for the unique-key race.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from typing import Any, Callable

from ..errors import FhirError
from ..storage.database import WriteConflict
from ..storage.faults import is_retryable

log = logging.getLogger(__name__)

ATTEMPTS = 6


def is_transient(exc: BaseException) -> bool:
    """True for a database error that a retry of the whole transaction can cure
    (storage.faults.is_retryable, looked for along the exception's chain)."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if is_retryable(e):
            return True
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return False


def run_with_retry(db, fn: Callable[..., Any], copy_of: Any = None, attempts: int = ATTEMPTS) -> Any:
    """`fn(conn)` (or `fn(conn, deepcopy(copy_of))` when copy_of is given) inside
    `db.write()`, retried on a transient failure; FhirError as described above."""
    delay = 0.02
    for attempt in range(1, attempts + 1):
        try:
            with db.write() as conn:
                return fn(conn) if copy_of is None else fn(conn, copy.deepcopy(copy_of))
        except WriteConflict as exc:
            if attempt == attempts:
                raise
            log.debug("write conflict, attempt %d of %d: %s", attempt, attempts, exc)
        except FhirError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts:
                log.warning("write transaction still failing after %d attempts: %s", attempts, exc)
                err = FhirError.of(
                    503, "transient",
                    f"The transaction lost {attempts} times to concurrent writers (deadlock or lock timeout); "
                    "nothing was written, retry the request",
                )
                err.headers["Retry-After"] = "1"
                raise err from None
            log.debug("transient database error, attempt %d of %d: %s", attempt, attempts, exc)
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.5)
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["run_with_retry", "is_transient", "ATTEMPTS"]
