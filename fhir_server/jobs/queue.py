"""Durable job queue: the `jobs` table is the queue, a lease is the lock.

A worker claims a job by writing its name and a lease expiry into the row; it
renews the lease (and saves its resumable cursor) with each heartbeat. A worker
that dies simply stops renewing, so once the lease expires any other worker
may claim the job again and continue from the last saved cursor. Every write a
worker makes is guarded by `lease_owner`, so a worker that lost its lease (or
whose job was cancelled) cannot overwrite the new owner's progress.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import Connection, and_, delete, or_, select, update

from ..storage.schema import job_files, jobs
from .lease import LeaseKeeper

log = logging.getLogger("fhir_server.jobs")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
# A job enqueued with `not_before` waits in SCHEDULED until its due time (kept in lease_until).
SCHEDULED = "scheduled"
MAX_ATTEMPTS = 3
# A failed attempt waits RETRY_BACKOFF_SECONDS * 2**(attempt-1) before the next.
RETRY_BACKOFF_SECONDS = 10.0

# Set after an enqueue commits, so an idle worker in this process starts at once
# rather than at its next poll.
wakeup = threading.Event()


def utcnow() -> datetime:
    from ..clock import now

    return now()


def _utc(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored is UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


@dataclass
class Job:
    id: str
    kind: str
    state: str
    params: dict
    cursor: Any
    progress: str | None
    result: Any
    error: str | None
    attempts: int
    created: datetime
    updated: datetime
    lease_until: datetime | None
    lease_owner: str | None


def _job(row) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        kind=m["kind"],
        state=m["state"],
        params=json.loads(m["params"]),
        cursor=json.loads(m["cursor"]) if m["cursor"] else None,
        progress=m["progress"],
        result=json.loads(m["result"]) if m["result"] else None,
        error=m["error"],
        attempts=m["attempts"] or 0,
        created=_utc(m["created"]),
        updated=_utc(m["updated"]),
        lease_until=_utc(m["lease_until"]),
        lease_owner=m["lease_owner"],
    )


class JobInterrupted(Exception):
    """The worker no longer owns the job (cancelled, or its lease was taken)."""


class PermanentJobError(Exception):
    """A failure that retrying cannot fix: fail the job at once."""


# ---------------------------------------------------------------- handlers

@dataclass
class HandlerSpec:
    fn: Callable[["JobContext"], Any]
    lease_seconds: int


_handlers: dict[str, HandlerSpec] = {}
_housekeeping: dict[str, Callable[[Any, Any], None]] = {}


def register_handler(kind: str, fn: Callable[["JobContext"], Any], lease_seconds: int = 60) -> None:
    """`fn(ctx)` runs one job; its return value (JSON) becomes the job's result."""
    _handlers[kind] = HandlerSpec(fn, lease_seconds)


def register_housekeeping(name: str, fn: Callable[[Any, Any], None]) -> None:
    """`fn(db, settings)` runs periodically in the worker (e.g. expiring exports)."""
    _housekeeping[name] = fn


def handler_kinds() -> list[str]:
    return sorted(_handlers)


def lease_for(kinds) -> int:
    """Claim with the longest lease among the kinds (the handler renews it anyway)."""
    return max((_handlers[k].lease_seconds for k in kinds if k in _handlers), default=60)


# ---------------------------------------------------------------- queue operations

def enqueue(conn: Connection, kind: str, params: dict, job_id: str | None = None, not_before: datetime | None = None) -> str:
    """Add a job in the caller's transaction; call `wakeup.set()` after commit.

    `not_before` (UTC): the job is not claimed before then (state `scheduled`)."""
    job_id = job_id or uuid.uuid4().hex
    now = utcnow()
    state, due = (SCHEDULED, _utc(not_before)) if not_before is not None else (QUEUED, None)
    conn.execute(
        jobs.insert().values(
            id=job_id, kind=kind, state=state, params=json.dumps(params), cursor=None, progress=None,
            result=None, error=None, attempts=0, created=now, updated=now, lease_until=due, lease_owner=None,
        )
    )
    return job_id


def get(conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
    return _job(row) if row else None


def _claimable(now: datetime):
    expired = and_(jobs.c.state == RUNNING, or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now))
    due = and_(jobs.c.state == SCHEDULED, jobs.c.lease_until <= now)
    return or_(jobs.c.state == QUEUED, expired, due)


def claim(db, kinds: list[str] | tuple[str, ...], owner: str, lease_seconds: int = 60) -> Job | None:
    """Take the oldest queued job (or one whose lease expired) of the given kinds.

    PostgreSQL: `FOR UPDATE SKIP LOCKED` lets concurrent workers pass each other.
    SQLite: the write transaction (BEGIN IMMEDIATE) serialises claimers.
    The UPDATE repeats the claimable condition, so a lost race claims nothing.
    """
    if not kinds:
        return None
    now = utcnow()
    with db.write() as conn:
        stmt = (
            select(jobs.c.id)
            .where(jobs.c.kind.in_(list(kinds)), _claimable(now))
            .order_by(jobs.c.created, jobs.c.id)
            .limit(1)
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        job_id = conn.execute(stmt).scalar()
        if job_id is None:
            return None
        res = conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, _claimable(now))
            .values(
                state=RUNNING, lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds),
                attempts=jobs.c.attempts + 1, updated=now,
            )
        )
        if res.rowcount != 1:
            return None
        return get(conn, job_id)


def _owned(job_id: str, owner: str):
    return and_(jobs.c.id == job_id, jobs.c.state == RUNNING, jobs.c.lease_owner == owner)


def heartbeat(db, job_id: str, owner: str, lease_seconds: int = 60, cursor: Any = None, progress: str | None = None) -> bool:
    """Renew the lease (saving cursor/progress if given); False = the job is no longer ours."""
    now = utcnow()
    values: dict[str, Any] = {"lease_until": now + timedelta(seconds=lease_seconds), "updated": now}
    if cursor is not None:
        values["cursor"] = json.dumps(cursor)
    if progress is not None:
        values["progress"] = progress
    with db.write() as conn:
        return conn.execute(update(jobs).where(_owned(job_id, owner)).values(**values)).rowcount == 1


def complete(db, job_id: str, owner: str, result: Any = None, within: Callable[[Connection], None] | None = None) -> bool:
    """Mark done; `within(conn)` runs in the same transaction (e.g. recording files)."""
    now = utcnow()
    with db.write() as conn:
        res = conn.execute(
            update(jobs)
            .where(_owned(job_id, owner))
            .values(state=DONE, result=json.dumps(result) if result is not None else None, updated=now,
                    lease_until=None, progress="done")
        )
        if res.rowcount != 1:
            return False
        if within:
            within(conn)
        return True


def fail(db, job_id: str, owner: str, error: str, retry: bool = False, attempts: int = 1) -> bool:
    """Record a failure: for good, or (retry) to be claimed again after a back-off.

    A retry keeps the cursor, and is parked as `running` with no owner and a
    lease ending when the back-off does, so that claim's expired-lease rule
    picks it up then, and not in a hot loop.
    """
    now = utcnow()
    values: dict[str, Any] = {"error": error[:4000], "updated": now, "lease_owner": None}
    if retry:
        delay = RETRY_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0)
        values.update(state=RUNNING, lease_until=now + timedelta(seconds=delay), progress=f"retrying after: {error[:60]}")
    else:
        values.update(state=FAILED, lease_until=None)
    with db.write() as conn:
        return conn.execute(update(jobs).where(_owned(job_id, owner)).values(**values)).rowcount == 1


def cancel(conn: Connection, job_id: str) -> bool:
    """Cancel a queued or running job (the worker notices at its next heartbeat).

    A finished job is marked cancelled too, so its results stop being served.
    """
    return conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.in_([QUEUED, SCHEDULED, RUNNING, DONE, FAILED]))
        .values(state=CANCELLED, updated=utcnow(), lease_until=None, lease_owner=None)
    ).rowcount == 1


def remove(conn: Connection, job_id: str) -> None:
    conn.execute(delete(job_files).where(job_files.c.job_id == job_id))
    conn.execute(delete(jobs).where(jobs.c.id == job_id))


def finished_before(conn: Connection, kind: str, before: datetime) -> list[str]:
    """Ids of finished (done, failed, cancelled) jobs last touched before `before`."""
    return list(
        conn.execute(
            select(jobs.c.id).where(
                jobs.c.kind == kind, jobs.c.state.in_([DONE, FAILED, CANCELLED]), jobs.c.updated < before
            )
        ).scalars()
    )


# ---------------------------------------------------------------- running one job

class JobContext:
    """What a handler sees: its job, and `checkpoint` to save progress safely."""

    def __init__(self, db, settings, job: Job, owner: str, lease_seconds: int):
        self.db = db
        self.settings = settings
        self.job = job
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.completed = False
        self.keeper = None  # the LeaseKeeper renewing this job's lease while it runs

    @property
    def lease_lost(self) -> bool:
        """True once the lease keeper found the job taken from this worker."""
        return self.keeper is not None and self.keeper.lost

    def checkpoint(self, cursor: Any, progress: str | None = None) -> None:
        """Save the cursor and renew the lease, or raise JobInterrupted."""
        if self.lease_lost or not heartbeat(self.db, self.job.id, self.owner, self.lease_seconds, cursor, progress):
            raise JobInterrupted(self.job.id)
        self.job.cursor = cursor

    def complete(self, result: Any = None, within: Callable[[Connection], None] | None = None) -> None:
        """Finish the job; handlers that need `within` call this themselves."""
        if not complete(self.db, self.job.id, self.owner, result, within):
            raise JobInterrupted(self.job.id)
        self.completed = True


def run_job(db, settings, job: Job, owner: str) -> str:
    """Run a claimed job to its end; returns the state it was left in."""
    spec = _handlers.get(job.kind)
    if spec is None:
        fail(db, job.id, owner, f"no handler for job kind '{job.kind}'")
        return FAILED
    ctx = JobContext(db, settings, job, owner, spec.lease_seconds)

    def renew() -> bool:
        return heartbeat(db, job.id, owner, spec.lease_seconds)

    try:
        # The lease is renewed for as long as the handler runs, checkpoints or
        # not: a live worker's job is never claimed by another process.
        with LeaseKeeper(renew, spec.lease_seconds / 3, name=f"lease-{job.id[:12]}") as keeper:
            ctx.keeper = keeper
            result = spec.fn(ctx)
            if not ctx.completed:
                if keeper.lost:
                    raise JobInterrupted(job.id)
                ctx.complete(result)
    except JobInterrupted:
        log.info("job %s interrupted (cancelled or lease lost)", job.id)
        return "interrupted"
    except PermanentJobError as exc:
        fail(db, job.id, owner, str(exc))
        return FAILED
    except Exception as exc:  # a handler bug or a transient database error
        log.exception("job %s (%s) failed on attempt %d", job.id, job.kind, job.attempts)
        retry = job.attempts < MAX_ATTEMPTS
        fail(db, job.id, owner, f"{type(exc).__name__}: {exc}", retry=retry, attempts=job.attempts)
        return QUEUED if retry else FAILED
    return DONE


def run_housekeeping(db, settings) -> None:
    for name, fn in list(_housekeeping.items()):
        try:
            fn(db, settings)
        except Exception:  # never let cleanup stop the worker
            log.exception("housekeeping %s failed", name)
