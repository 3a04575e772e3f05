"""Benchmark $export against the cheapest possible read of the same rows.

Generates N resources straight into the database (cloned from a Synthea
Patient and Observation, new ids, in batches so the generator's memory stays
flat), then in the same run times:

1. a raw streaming pass `SELECT content FROM resources` (the floor: no
   filtering, no files), and
2. an export end to end: HTTP kick-off, the worker run (in this process),
   manifest, and every file downloaded through HTTP,

and prints resources/s for both, their ratio, and peak RSS after each phase.

    python bench/bench_export.py --n 100000
    FHIR_SERVER_DATABASE_URL=postgresql://... python bench/bench_export.py --n 1000000

On PostgreSQL use a scratch database: the generated rows are added to it
(the export covers whatever else is there too, and the counts say so).
Only `resources` is filled (no history, no search index): a system-level
export reads neither.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea-r4"

from sqlalchemy import func, select  # noqa: E402

from fhir_server.config import Settings  # noqa: E402
from fhir_server.storage.database import Database  # noqa: E402
from fhir_server.storage.migrate import upgrade  # noqa: E402
from fhir_server.storage.schema import resources  # noqa: E402

FALLBACK_PATIENT = {"resourceType": "Patient", "name": [{"family": "Bench", "given": ["Mark"]}], "gender": "female", "birthDate": "1970-01-01"}
FALLBACK_OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
    "valueQuantity": {"value": 72.5, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    "effectiveDateTime": "2020-01-01T10:00:00Z",
}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / (1024 * 1024)


def current_rss_mb() -> float | None:
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
        except OSError:
            return None
    return psutil.Process().memory_info().rss / (1024 * 1024)


def templates() -> tuple[dict, dict]:
    """A real Synthea Patient and Observation if the shared data is present."""
    patient = observation = None
    if SYNTHEA.exists():
        for path in sorted(SYNTHEA.glob("*_*.json")):
            bundle = json.loads(path.read_text(encoding="utf-8"))
            for entry in bundle.get("entry", []):
                res = entry.get("resource", {})
                if res.get("resourceType") == "Patient" and patient is None:
                    patient = res
                elif res.get("resourceType") == "Observation" and observation is None:
                    observation = res
            if patient and observation:
                break
    return patient or FALLBACK_PATIENT, observation or FALLBACK_OBSERVATION


def generate(db: Database, n: int, obs_per_patient: int, batch: int) -> None:
    """Insert n resources (1 Patient per obs_per_patient Observations)."""
    patient_t, obs_t = templates()
    patient_t = {k: v for k, v in patient_t.items() if k not in ("id", "meta", "text")}
    obs_t = {k: v for k, v in obs_t.items() if k not in ("id", "meta", "text")}
    run = uuid.uuid4().hex[:8]
    start = datetime.now(timezone.utc) - timedelta(days=1)
    rows: list[dict] = []
    current_patient = None
    t0 = time.perf_counter()
    for i in range(n):
        when = start + timedelta(microseconds=i * 1000)
        stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if i % (obs_per_patient + 1) == 0:
            res_type, current_patient = "Patient", f"bench-{run}-p{i}"
            res_id, body = current_patient, patient_t
        else:
            res_type, res_id = "Observation", f"bench-{run}-o{i}"
            body = {**obs_t, "subject": {"reference": f"Patient/{current_patient}"}}
        doc = {"resourceType": res_type, "id": res_id, "meta": {"versionId": "1", "lastUpdated": stamp}}
        doc.update({k: v for k, v in body.items() if k != "resourceType"})
        content = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        rows.append({"res_type": res_type, "res_id": res_id, "version_id": 1, "last_updated": when, "deleted": False, "content": content})
        if len(rows) >= batch:
            with db.write() as conn:
                conn.execute(resources.insert(), rows)
            rows.clear()
    if rows:
        with db.write() as conn:
            conn.execute(resources.insert(), rows)
    dt = time.perf_counter() - t0
    print(f"generated {n:,} resources in {dt:.1f}s ({n / dt:,.0f}/s)")


def raw_pass(db: Database) -> tuple[int, int, float]:
    """Stream every row's content once: the floor any export is measured against."""
    t0 = time.perf_counter()
    count = size = 0
    # A transaction, not autocommit: PostgreSQL server-side cursors live in one.
    with db.engine.connect() as conn, conn.begin():
        result = conn.execution_options(stream_results=True, yield_per=2000).execute(select(resources.c.content))
        for (content,) in result:
            count += 1
            size += len(content) if content is not None else 0
    return count, size, time.perf_counter() - t0


def export_pass(settings: Settings, db: Database) -> tuple[int, int, float, float, float]:
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app
    from fhir_server.jobs.runner import run_pending

    app = build_app(settings, db)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import bearer_headers

    client = TestClient(app, headers=bearer_headers(settings, db))
    t0 = time.perf_counter()
    r = client.get("/fhir/$export", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    status = r.headers["content-location"]
    run_pending(db, settings)
    r = client.get(status)
    assert r.status_code == 200, r.text
    manifest = r.json()
    t_export = time.perf_counter() - t0
    count = sum(o["count"] for o in manifest["output"])
    size = 0
    t1 = time.perf_counter()
    for item in manifest["output"]:
        lines = 0
        with client.stream("GET", item["url"]) as resp:
            assert resp.status_code == 200
            for chunk in resp.iter_bytes():
                size += len(chunk)
                lines += chunk.count(b"\n")
        assert lines == item["count"], (item, lines)
    t_download = time.perf_counter() - t1
    client.delete(status)
    return count, size, t_export, t_download, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="resources to generate (default 100k)")
    ap.add_argument("--obs-per-patient", type=int, default=20)
    ap.add_argument("--batch", type=int, default=5000, help="insert batch size")
    ap.add_argument("--db-url", default=os.environ.get("FHIR_SERVER_DATABASE_URL", ""), help="default: a fresh SQLite file")
    ap.add_argument("--workdir", default=None, help="where the SQLite file and export files go (default: a temp dir)")
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-export-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = args.db_url or f"sqlite:///{workdir / 'bench.sqlite'}"
    settings = Settings(database_url=url, export_dir=str(workdir / "export"), run_background_jobs=False)
    db = Database(url)
    upgrade(db.engine)
    print(f"database: {db.dialect} ({url if db.dialect == 'sqlite' else 'FHIR_SERVER_DATABASE_URL'}), workdir {workdir}")
    print(f"rss at start: peak {peak_rss_mb():.0f} MB")

    generate(db, args.n, args.obs_per_patient, args.batch)
    with db.read() as conn:
        total = conn.execute(select(func.count()).select_from(resources)).scalar()
    print(f"rows in resources: {total:,}; peak RSS after generation {peak_rss_mb():.0f} MB")

    raw_n, raw_bytes, raw_s = raw_pass(db)
    print(f"raw SELECT content: {raw_n:,} rows, {raw_bytes / 1e6:,.0f} MB in {raw_s:.2f}s = {raw_n / raw_s:,.0f} resources/s; "
          f"peak RSS {peak_rss_mb():.0f} MB")

    n, size, t_export, t_download, t_total = export_pass(settings, db)
    print(f"$export (kick-off + worker + manifest): {n:,} resources, {size / 1e6:,.0f} MB in {t_export:.2f}s = {n / t_export:,.0f} resources/s")
    print(f"download of all files over HTTP: {t_download:.2f}s = {n / t_download:,.0f} resources/s; end to end {t_total:.2f}s = {n / t_total:,.0f} resources/s")
    print(f"ratio export/raw throughput: {(n / t_export) / (raw_n / raw_s):.2f} (end to end incl. download: {(n / t_total) / (raw_n / raw_s):.2f})")
    cur = current_rss_mb()
    print(f"peak RSS {peak_rss_mb():.0f} MB" + (f", current {cur:.0f} MB" if cur else ""))


if __name__ == "__main__":
    main()
