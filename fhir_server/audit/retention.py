"""Retention of the access log: a durable job that deletes AuditEvents past their time.

`FHIR_SERVER_AUDIT_RETENTION_DAYS` (0, the default: keep every event). When set, the job
worker's housekeeping enqueues one `audit-retention` job per hour (a fixed job id per hour,
so several workers enqueue it once); the job deletes events recorded more than that many
days ago, in batches of `BATCH` committed one by one with a checkpoint, so a crashed worker's
job is taken over by another and simply continues (deleting is idempotent).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from ..jobs import queue
from .log import delete_before

KIND = "audit-retention"
BATCH = 2000


def run(ctx: queue.JobContext) -> dict:
    """The job handler: delete events recorded before `params.cutoff` (ISO instant)."""
    from datetime import datetime

    cutoff = datetime.fromisoformat(ctx.job.params["cutoff"])
    removed = int((ctx.job.cursor or {}).get("removed", 0))
    while True:
        with ctx.db.write() as conn:
            n = delete_before(conn, cutoff, BATCH)
        removed += n
        if n < BATCH:
            return {"removed": removed, "cutoff": ctx.job.params["cutoff"]}
        ctx.checkpoint({"removed": removed}, f"{removed} AuditEvents removed")


def enqueue_due(db, settings) -> str | None:
    """Housekeeping: enqueue this hour's retention job (once); returns its id, or None when
    retention is off or the job exists already."""
    days = int(getattr(settings, "audit_retention_days", 0) or 0)
    if days <= 0:
        return None
    now = queue.utcnow()
    job_id = f"{KIND}-{now:%Y%m%d%H}"
    cutoff = (now - timedelta(days=days)).isoformat()
    try:
        with db.write() as conn:
            if queue.get(conn, job_id) is not None:
                return None
            queue.enqueue(conn, KIND, {"cutoff": cutoff}, job_id=job_id)
    except IntegrityError:  # another worker enqueued it a moment ago
        return None
    queue.wakeup.set()
    return job_id


def register() -> None:
    queue.register_handler(KIND, run, lease_seconds=120)
    queue.register_housekeeping(KIND, enqueue_due)
