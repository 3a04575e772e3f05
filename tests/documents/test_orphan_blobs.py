"""The orphan-blob sweeper: a process killed between storing a Binary's bytes and
committing its row leaves a blob nothing names; the durable job removes it once
past the grace period, and keeps every blob a Binary version names."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from fhir_server.documents import orphans
from fhir_server.jobs import queue
from fhir_server.jobs.runner import run_pending
from fhir_server.storage import blobs
from tests.document_fixtures import pdf_bytes

# Runs in a child process: writes a Binary through the server's own write path
# (the bytes go to the blob store), then dies before the transaction commits.
_CRASH = r"""
import base64, json, os, sys
import orjson
from fhir_server.bootstrap import build_app
from fhir_server.config import Settings
from fhir_server.rest import interactions as ix
from fhir_server.rest.context import RequestContext
from fhir_server.storage import blobs

settings = Settings(**json.loads(sys.argv[1]))
app = build_app(settings)
body = {"resourceType": "Binary", "contentType": "application/pdf", "data": sys.argv[2]}
with app.state.db.write() as conn:
    out = ix.create(conn, RequestContext(base_url=""), "Binary", ix.ParsedResource.from_bytes(orjson.dumps(body)))
    keys = [k for k, _ in blobs.current().list_blobs() if k.startswith(f"Binary/{out.res_id}/")]
    print(json.dumps({"id": out.res_id, "keys": keys}), flush=True)
    os._exit(9)  # the crash: no commit, no rollback handler
"""


def _crash_while_writing(settings, pdf: bytes) -> dict:
    conf = {"database_url": settings.database_url, "blob_dir": settings.blob_dir, "export_dir": settings.export_dir,
            "run_background_jobs": False, "terminology_load": False}
    proc = subprocess.run([sys.executable, "-c", _CRASH, json.dumps(conf), base64.b64encode(pdf).decode()],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert proc.returncode == 9, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def store(settings):
    """The settings' own store as the current one (the child process writes there;
    other tests may have left another store current)."""
    before = blobs._current
    try:
        yield blobs.configure(settings)
    finally:
        blobs.use(before) if before is not None else None


def _age(key: str, hours: float) -> None:
    store = blobs.current()
    path = store.root / f"{key}.bin"
    t = time.time() - hours * 3600
    os.utime(path, (t, t))


def test_blob_orphaned_by_a_crash_is_swept_and_named_blobs_stay(client, app, settings, store):
    quiet = settings.model_copy(update={"blob_sweep_interval_seconds": 0})
    run_pending(app.state.db, quiet, kinds=[orphans.KIND])  # sweeps queued by earlier housekeeping
    crashed = _crash_while_writing(settings, pdf_bytes("Regning", "efterladt"))
    assert client.get(f"/fhir/Binary/{crashed['id']}").status_code == 404  # the row never committed
    (orphan,) = crashed["keys"]
    assert store.info(orphan) is not None  # ... but its bytes are in the store

    young = _crash_while_writing(settings, pdf_bytes("Regning", "ung"))["keys"][0]
    pdf = pdf_bytes("Regning", "beholdt")
    kept = client.post("/fhir/Binary", content=pdf, headers={"Content-Type": "application/pdf"})
    assert kept.status_code == 201, kept.text
    kept_id = kept.json()["id"] if kept.content else kept.headers["Location"].split("/Binary/")[1].split("/")[0]
    kept_keys = [k for k, _ in store.list_blobs() if k.startswith(f"Binary/{kept_id}/")]
    assert len(kept_keys) == 1
    # an old version's blob stays too (history and vread still need it)
    pdf2 = pdf_bytes("Regning", "ny")
    updated = client.put(f"/fhir/Binary/{kept_id}", content=pdf2, headers={"Content-Type": "application/pdf"})
    assert updated.status_code == 200, updated.text
    kept_keys = [k for k, _ in store.list_blobs() if k.startswith(f"Binary/{kept_id}/")]
    assert len(kept_keys) == 2
    for key in [orphan, *kept_keys]:
        _age(key, 2)  # older than the grace period (1 h)
    partial = store.root / ".partial" / "left-by-a-crash"
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"%PDF-1.4 half")
    old = time.time() - 7200
    os.utime(partial, (old, old))

    with app.state.db.write() as conn:
        job_id = orphans.queue_sweep(conn)
    run_pending(app.state.db, quiet, kinds=[orphans.KIND])
    with app.state.db.read() as conn:
        job = queue.get(conn, job_id)
    assert job.state == queue.DONE, job
    assert job.result["deleted"] >= 1 and job.result["unfinished"] >= 1 and job.result["kept_young"] >= 1, job.result

    assert store.info(orphan) is None and not (store.root / f"{orphan}.bin").exists()
    assert not partial.exists()
    assert store.info(young) is not None  # still within the grace period: a write may be in flight
    for key in kept_keys:
        assert store.info(key) is not None
    got = client.get(f"/fhir/Binary/{kept_id}", headers={"Accept": "application/pdf"})
    assert got.status_code == 200 and got.content == pdf2
    first = client.get(f"/fhir/Binary/{kept_id}/_history/1", headers={"Accept": "application/pdf"})
    assert first.status_code == 200 and first.content == pdf


def test_sweep_resumes_after_its_cursor(app, settings, tmp_path):
    """The job's cursor is the last key looked at: a resumed sweep does not start over."""
    from fhir_server.storage.blobs.filesystem import FilesystemBlobStore

    store = FilesystemBlobStore(tmp_path / "store")
    keys = [f"Binary/b{i:02d}/k" for i in range(12)]
    for key in keys:
        store.put_bytes(key, b"x", "application/pdf")
    assert [k for k, _ in store.list_blobs()] == keys
    assert [k for k, _ in store.list_blobs(after=keys[4])] == keys[5:]
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    seen: list[str] = []
    counts = orphans.sweep(app.state.db, store, 3600, after=keys[7], checkpoint=lambda c, _p: seen.append(c), now=later)
    assert counts["scanned"] == 4 and counts["deleted"] == 4  # no such Binary rows: all orphans
    assert [k for k, _ in store.list_blobs()] == keys[:8]


def test_housekeeping_queues_one_sweep_per_interval(app, settings):
    s = settings.model_copy(update={"blob_sweep_interval_seconds": 3600})
    orphans.schedule(app.state.db, s)
    orphans.schedule(app.state.db, s)
    job_id = f"orphan-blobs-{int(queue.utcnow().timestamp()) // 3600}"
    with app.state.db.read() as conn:
        assert queue.get(conn, job_id).kind == orphans.KIND
    run_pending(app.state.db, s, kinds=[orphans.KIND])
