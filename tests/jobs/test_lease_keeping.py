"""A job that runs longer than its lease is not taken over by another worker
while the first one is alive; one whose worker stops renewing is."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from fhir_server.jobs import queue
from fhir_server.jobs.lease import LeaseKeeper
from fhir_server.jobs.runner import run_pending


@pytest.fixture
def db(app):
    return app.state.db


@pytest.fixture
def slow_kind():
    """A job kind with a 1-second lease whose handler takes 3.5 s and never checkpoints."""
    kind = f"test.slow.{uuid.uuid4().hex[:8]}"
    runs: list[str] = []

    def handler(ctx):
        runs.append(ctx.owner)
        time.sleep(3.5)
        return {"ran": len(runs)}

    queue.register_handler(kind, handler, lease_seconds=1)
    yield kind, runs
    queue._handlers.pop(kind, None)


def test_a_job_longer_than_its_lease_runs_once_across_workers(db, settings, slow_kind):
    kind, runs = slow_kind
    with db.write() as conn:
        job_id = queue.enqueue(conn, kind, {})
    first = threading.Thread(target=run_pending, args=(db, settings, [kind], "worker-a", 1))
    first.start()
    time.sleep(0.3)  # worker-a has claimed it
    taken = []
    deadline = time.time() + 3.0  # the lease (1 s) would have run out three times over
    while time.time() < deadline:
        taken.append(run_pending(db, settings, [kind], "worker-b", 1))
        time.sleep(0.2)
    first.join()
    assert runs == ["worker-a"]
    assert sum(taken) == 0
    with db.read() as conn:
        job = queue.get(conn, job_id)
    assert job.state == queue.DONE and job.attempts == 1 and job.result == {"ran": 1}


def test_a_stalled_workers_lease_is_taken_over_and_its_late_result_refused(db, settings):
    """The keeper stops only with its process: a worker that stops renewing loses the job,
    and what it tries to write afterwards is refused (JobInterrupted)."""
    kind = f"test.stall.{uuid.uuid4().hex[:8]}"
    queue.register_handler(kind, lambda ctx: {"by": ctx.owner}, lease_seconds=1)
    try:
        with db.write() as conn:
            job_id = queue.enqueue(conn, kind, {})
        stalled = queue.claim(db, [kind], "worker-stalled", lease_seconds=1)
        assert stalled is not None
        time.sleep(1.3)  # no renewals: the lease runs out
        assert run_pending(db, settings, [kind], "worker-b", 1) == 1
        ctx = queue.JobContext(db, settings, stalled, "worker-stalled", 1)
        with pytest.raises(queue.JobInterrupted):
            ctx.checkpoint({"late": True})
        with db.read() as conn:
            job = queue.get(conn, job_id)
        assert job.state == queue.DONE and job.result == {"by": "worker-b"} and job.cursor is None
    finally:
        queue._handlers.pop(kind, None)


def test_keeper_reports_a_lost_lease_and_stops_renewing():
    calls: list[int] = []

    def renew() -> bool:
        calls.append(1)
        return len(calls) < 3

    with LeaseKeeper(renew, 0.05) as keeper:
        time.sleep(0.5)
        assert keeper.lost
    assert len(calls) == 3


def test_keeper_survives_a_failing_renewal():
    calls: list[int] = []

    def renew() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away for a moment")
        return True

    with LeaseKeeper(renew, 0.05) as keeper:
        time.sleep(0.4)
    assert not keeper.lost and len(calls) >= 3
