"""The orphan-blob sweeper: a durable job removing blobs no Binary version names.

Why there are orphans: a Binary's bytes are written to the blob store first and
its resource row is committed after (the store is not part of the database
transaction). A rolled-back write deletes its blob again
(binary_content.store_in_transaction, api/binary.py), but a crash between the
two — the process killed, the machine lost — leaves bytes that nothing points
at, and a crash mid-upload leaves a partial upload.

The job (kind `documents.orphan-blobs`, fhir_server/jobs): walks the store's
blobs in key order (`BlobStore.list_blobs`), saving the last key as its
resumable cursor every CHECKPOINT_EVERY blobs, and deletes a blob when

  * its key has the form `Binary/<id>/<random>` (other keys are not ours to judge),
  * it was stored more than `blob_orphan_grace_seconds` ago (default 3600 s: far
    longer than any write transaction, so a write still in flight is never
    touched), and
  * no version of Binary/<id> (current, historic or deleted) names that key.

Unfinished uploads older than the grace period go too (`discard_unfinished`).
The result is {"scanned", "deleted", "kept_young", "unfinished"}. The worker's
housekeeping queues the job every `blob_sweep_interval_seconds` (default one
day; 0 turns it off) under one job id per interval, due at the interval's end, so
several workers queue it once; `queue_sweep` queues one at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import orjson
from sqlalchemy import select

from ..jobs import queue
from ..storage import blobs
from ..storage.schema import resource_versions, resources
from .binary_content import blob_key

log = logging.getLogger("fhir_server.documents")

KIND = "documents.orphan-blobs"
CHECKPOINT_EVERY = 500


def _referenced_keys(conn, res_id: str) -> set[str]:
    """The blob keys the versions of Binary/<res_id> name (none when there is no such Binary)."""
    r, v = resources.c, resource_versions.c
    keys: set[str] = set()
    rows = conn.execute(
        select(v.content).join(resources, r.pk == v.res_pk).where(r.res_type == "Binary", r.res_id == res_id)
    )
    for (content,) in rows:
        key = blob_key(orjson.loads(bytes(content))) if content is not None else None
        if key:
            keys.add(key)
    return keys


def sweep(db, store, grace_seconds: float, after: str = "", checkpoint=None, now: datetime | None = None) -> dict:
    """Delete orphaned blobs (see the module docstring); `checkpoint(cursor, progress)`
    is called every CHECKPOINT_EVERY blobs with the last key seen. Returns the counts."""
    cutoff = (now or queue.utcnow()) - timedelta(seconds=grace_seconds)
    counts = {"scanned": 0, "deleted": 0, "kept_young": 0, "unfinished": store.discard_unfinished(cutoff)}
    cached_id, cached_keys = None, set()
    for key, stored in store.list_blobs(after):
        counts["scanned"] += 1
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "Binary":
            if stored >= cutoff:
                counts["kept_young"] += 1
            else:
                if parts[1] != cached_id:
                    with db.read() as conn:
                        cached_id, cached_keys = parts[1], _referenced_keys(conn, parts[1])
                if key not in cached_keys:
                    store.delete(key)
                    counts["deleted"] += 1
                    log.info("removed orphaned blob %s (stored %s, named by no Binary version)", key, stored.isoformat())
        if checkpoint is not None and counts["scanned"] % CHECKPOINT_EVERY == 0:
            checkpoint(key, f"{counts['scanned']} blobs scanned, {counts['deleted']} removed")
    return counts


def run_sweep_job(ctx) -> dict:
    settings = ctx.settings
    grace = float(getattr(settings, "blob_orphan_grace_seconds", 3600))
    result = sweep(ctx.db, blobs.current(), grace, after=ctx.job.cursor or "", checkpoint=ctx.checkpoint)
    if ctx.job.cursor:
        result["resumed_after"] = ctx.job.cursor
    return result


def queue_sweep(conn, job_id: str | None = None) -> str:
    """Queue a sweep in the caller's transaction (call `queue.wakeup.set()` after commit)."""
    return queue.enqueue(conn, KIND, {}, job_id=job_id)


def schedule(db, settings) -> None:
    """Housekeeping: queue this interval's sweep once (one job id per interval)."""
    interval = int(getattr(settings, "blob_sweep_interval_seconds", 86400) or 0)
    if interval <= 0:
        return
    k = int(queue.utcnow().timestamp()) // interval
    job_id = f"orphan-blobs-{k}"
    due = datetime.fromtimestamp((k + 1) * interval, timezone.utc)  # at the end of this interval
    with db.read() as conn:
        if queue.get(conn, job_id) is not None:
            return
    try:
        with db.write() as conn:
            queue.enqueue(conn, KIND, {}, job_id=job_id, not_before=due)
    except Exception:  # another worker queued it first (unique job id)
        with db.read() as conn:
            if queue.get(conn, job_id) is None:
                raise
        return
    queue.wakeup.set()


def register() -> None:
    queue.register_handler(KIND, run_sweep_job, lease_seconds=300)
    queue.register_housekeeping("orphan-blobs", schedule)
