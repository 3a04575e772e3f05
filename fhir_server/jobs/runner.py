"""Start and stop the background workers with the application.

One daemon thread per application process claims jobs from the shared queue.
Several processes (uvicorn workers, hosts) may each run one: claims are atomic
and leases expire, so a job runs in one place at a time and survives crashes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..storage.database import Database
from . import queue

log = logging.getLogger("fhir_server.jobs")

HOUSEKEEPING_INTERVAL = 60.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker(threading.Thread):
    """Polls the queue (waking early on a local enqueue) and runs jobs one by one."""

    def __init__(self, db: Database, settings: Settings, poll_seconds: float = 1.0):
        super().__init__(name="fhir-jobs", daemon=True)
        self.db = db
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.owner = worker_name()
        self._stop_event = threading.Event()
        self._last_housekeeping = 0.0

    def stop(self) -> None:
        self._stop_event.set()
        queue.wakeup.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                if time.monotonic() - self._last_housekeeping > HOUSEKEEPING_INTERVAL:
                    self._last_housekeeping = time.monotonic()
                    queue.run_housekeeping(self.db, self.settings)
                if self._run_one():
                    continue
            except Exception:  # database away for a moment: wait and try again
                log.exception("job worker loop error")
            queue.wakeup.wait(self.poll_seconds)
            queue.wakeup.clear()

    def _run_one(self) -> bool:
        kinds = queue.handler_kinds()
        job = queue.claim(self.db, kinds, self.owner, queue.lease_for(kinds))
        if job is None:
            return False
        queue.run_job(self.db, self.settings, job, self.owner)
        return True


def run_pending(db: Database, settings: Settings, kinds: list[str] | None = None, owner: str | None = None, max_jobs: int | None = None) -> int:
    """Run queued (and lease-expired) jobs in this thread until none is left.

    For tests and the CLI; returns how many jobs were run.
    """
    owner = owner or worker_name()
    kinds = kinds or queue.handler_kinds()
    queue.run_housekeeping(db, settings)
    done = 0
    while max_jobs is None or done < max_jobs:
        job = queue.claim(db, kinds, owner, queue.lease_for(kinds))
        if job is None:
            break
        queue.run_job(db, settings, job, owner)
        done += 1
    return done


def attach_background_workers(app: FastAPI, db: Database, settings: Settings) -> None:
    """Run a worker thread for the application's lifetime (if enabled).

    Starlette 1.x dropped on_event, so the router's lifespan is wrapped instead.
    """
    if not settings.run_background_jobs:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        worker = Worker(db, settings)
        worker.start()
        app.state.job_worker = worker
        try:
            async with inner(a) as state:
                yield state
        finally:
            worker.stop()
            await run_in_threadpool(worker.join, 30)

    app.router.lifespan_context = lifespan
