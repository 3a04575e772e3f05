#!/usr/bin/env python3
"""What reaching the access log from other requests costs (audit.log_links), in process.

Builds an app on a fresh database (SQLite file, or --pg-url), creates --patients Patients
with one Observation each, and writes --events AuditEvents straight into the log
(audit.log.insert, as the batch writer does), spread over the patients (each naming one),
plus as many naming nobody. Then, through the ASGI app (TestClient, a system/*.* token),
--n requests per case, the cases taking turns, and prints per case the median wall and
process CPU time per request:

  rev-obs     Patient?_id=P&_revinclude=Observation:subject          (no log: the engine's include path)
  rev-log     Patient?_id=P&_revinclude=AuditEvent:patient            (the events naming P, rendered)
  everything  Patient/P/$everything?_type=AuditEvent&_count=50        (one page of P's events)
  has         Patient?_has:AuditEvent:patient:action=R&_count=10      (a match in the log)

It also prints the cost the engine's include path pays per include spec and round for
asking the log (log_links.includes on a 20-row page without AuditEvents; microseconds per
call), and an `$export` of AuditEvent: the job run in this process, in events/s, against
`fhir-server audit export`'s loop over the same log (the floor: every event read and
rendered once), and the time to download its files; and a Group export of 10 patients' events.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_log_links.py --patients 50 --events 20000 --n 200
    PYTHONPATH=$PWD .venv/bin/python bench/bench_log_links.py --pg-url postgresql+psycopg://postgres@127.0.0.1:55433/loglinks_bench

It prints figures and asserts nothing but that the answers are answers (HTTP 200/202).
The machine is shared: compare figures within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=50)
    ap.add_argument("--events", type=int, default=20000, help="events naming a patient (as many again naming nobody)")
    ap.add_argument("--n", type=int, default=200, help="requests per case")
    ap.add_argument("--pg-url", default="", help="a scratch PostgreSQL database (dropped and created)")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from benchlib import bearer_headers, recreate_pg_database
    from fhir_server.audit.balp import AuditFacts
    from fhir_server.audit.log import entry_of_facts, insert
    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade

    work = Path(tempfile.mkdtemp(prefix="bench-loglinks-"))
    url = args.pg_url or f"sqlite:///{work / 'bench.sqlite'}"
    if args.pg_url:
        recreate_pg_database(args.pg_url)
    settings = Settings(database_url=url, export_dir=str(work / "export"), run_background_jobs=False,
                        audit_flush_seconds=3600, audit_writer="thread")
    db = Database(url)
    upgrade(db.engine)
    app = build_app(settings, db)
    client = TestClient(app, headers=bearer_headers(settings, db))
    print(f"database: {db.dialect}; {args.patients} patients, {args.events} events naming one, {args.events} naming nobody")

    pids = []
    for i in range(args.patients):
        pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": f"B{i}"}]}).json()["id"]
        client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                               "subject": {"reference": f"Patient/{pid}"}})
        pids.append(pid)
    start = datetime.now(timezone.utc) - timedelta(days=30)
    batch = []
    for i in range(args.events * 2):
        pid = pids[i % len(pids)] if i < args.events else None
        batch.append(entry_of_facts(AuditFacts(
            "rest", "read", "R", 200, start + timedelta(seconds=i), subject=f"user{i % 7}", client_id="bench",
            fhir_user="Practitioner/bench", request_id=f"req-{i}", data=[("Patient", pid)] if pid else [("Device", "d")],
            patients=[pid] if pid else [])))
        if len(batch) == 2000:
            with db.write() as conn:
                insert(conn, batch)
            batch = []
    if batch:
        with db.write() as conn:
            insert(conn, batch)

    cases = {
        "rev-obs": lambda p: ("/fhir/Patient", {"_id": p, "_revinclude": "Observation:subject"}),
        "rev-log": lambda p: ("/fhir/Patient", {"_id": p, "_revinclude": "AuditEvent:patient"}),
        "everything": lambda p: (f"/fhir/Patient/{p}/$everything", {"_type": "AuditEvent", "_count": "50"}),
        "has": lambda p: ("/fhir/Patient", {"_has:AuditEvent:patient:action": "R", "_count": "10"}),
    }
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    sizes: dict[str, int] = {}
    for i in range(args.n):
        pid = pids[i % len(pids)]
        for name, make in cases.items():
            path, params = make(pid)
            w0, c0 = time.perf_counter(), time.process_time()
            r = client.get(path, params=params)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            assert r.status_code == 200, (name, r.text[:300])
            sizes[name] = len(r.json().get("entry", []))
    print(f"{'case':<12}{'entries':>9}{'wall ms (median)':>18}{'CPU ms (median)':>17}")
    for name in cases:
        print(f"{name:<12}{sizes[name]:>9}{statistics.median(wall[name]) * 1e3:>18.2f}{statistics.median(cpu[name]) * 1e3:>17.2f}")

    from fhir_server.audit import log_links
    from fhir_server.search.engine import _Include

    spec = _Include("Observation", "subject", None, False, True)
    frontier = [(i, "Patient", f"p{i}") for i in range(20)]
    with db.read() as conn:
        per = min(timeit.repeat(lambda: log_links.includes(conn, spec, frontier, None, ""), number=2000, repeat=5)) / 2000
    print(f"log_links.includes on a page without AuditEvents: {per * 1e6:.2f} us per spec and round")

    from fhir_server.audit.export import iter_events
    from fhir_server.jobs.runner import run_pending

    t0 = time.perf_counter()
    floor = sum(1 for _ in iter_events(db))
    floor_s = time.perf_counter() - t0
    r = client.get("/fhir/$export", params={"_type": "AuditEvent"}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    t0 = time.perf_counter()
    run_pending(db, settings)
    job_s = time.perf_counter() - t0
    manifest = client.get(r.headers["content-location"]).json()
    t0 = time.perf_counter()
    lines = sum(client.get(item["url"]).content.count(b"\n") for item in manifest["output"])
    download_s = time.perf_counter() - t0
    print(f"audit export loop (floor): {floor} events in {floor_s:.2f}s = {floor / floor_s:,.0f}/s; "
          f"$export _type=AuditEvent job: {lines} events in {job_s:.2f}s = {lines / job_s:,.0f}/s "
          f"(ratio {(lines / job_s) / (floor / floor_s):.2f}); download {download_s:.2f}s")
    group = client.post("/fhir/Group", json={"resourceType": "Group", "type": "person", "actual": True,
                                             "member": [{"entity": {"reference": f"Patient/{p}"}} for p in pids[:10]]}).json()["id"]
    r = client.get(f"/fhir/Group/{group}/$export", params={"_type": "AuditEvent"}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    t0 = time.perf_counter()
    run_pending(db, settings)
    group_s = time.perf_counter() - t0
    manifest = client.get(r.headers["content-location"]).json()
    n_group = sum(o["count"] for o in manifest["output"])
    print(f"Group/$export _type=AuditEvent ({min(10, len(pids))} patients): {n_group} events in {group_s:.2f}s "
          f"= {n_group / group_s:,.0f}/s")
    client.close()
    app.state.audit_writer.close()
    db.dispose()


if __name__ == "__main__":
    main()
