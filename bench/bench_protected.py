#!/usr/bin/env python3
"""What protection costs: token, policy (scopes, compartment, consent) and the access log.

Issue 13's target: read-by-id and a portal search with a patient's token, the policy
evaluation and the AuditEvents on keep at least 60% of the throughput of the same requests
with protection off, in the same run. For each backend (SQLite; PostgreSQL with --pg-url) the
script

1. starts `fhir-server serve` twice on one fresh database: `protected` (defaults: tokens
   required, FHIR_SERVER_AUDIT=on) and `open` (FHIR_SERVER_AUTH=off, FHIR_SERVER_AUDIT=off),
2. preloads --patients Patients with --obs Observations each (transaction Bundles),
3. picks one patient, and drives with the load generator of bench_rest.py (wrk or asyncio+httpx)
   `read`    GET /fhir/Observation/{id} over that patient's Observations, and
   `search`  GET /fhir/Observation?patient={id}&_count=10&_sort=-_lastUpdated (the portal's list),
   each on `open` without a token and on `protected` with a patient token (patient/*.rs,
   SMART patient context) - every protected request is checked against the patient's
   compartment and writes an AuditEvent,
4. interleaves --reps repetitions after a warm-up and prints the medians of req/s, p50 and p99,
   and the protected/open ratio per request kind; finally how many AuditEvents were written.
   After each protected run it waits until every request of the run is an event in the access
   log and counts that time in the run (req/s = requests / (duration + wait)): read events are
   written in batches up to 0.2 s later (docs/audit.md), and without this their writing would
   fall into the next server's run (`--no-drain` leaves it out).

    .venv/bin/python bench/bench_protected.py --duration 10 --reps 3 \
        --pg-url postgresql+psycopg://postgres@127.0.0.1:55432/fhir_issue13b_bench

It prints figures and asserts nothing. The machine is shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import AuditBacklog, free_port, recreate_pg_database

import bench_rest as br

TARGET_PROTECTED_OVER_OPEN = 0.60


def token(db_url: str, port: int, env: dict, scope: str, patient: str | None = None) -> str:
    argv = [sys.executable, "-m", "fhir_server.cli", "token", "--scope", scope, "--ttl", "86400",
            "--audience", f"http://127.0.0.1:{port}/fhir", "--database-url", db_url]
    if patient:
        argv += ["--patient", patient]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.strip()


def preload(base: str, patients: int, obs: int, tok: str) -> dict[str, list[str]]:
    """Patients with their Observations; returns patient id -> Observation ids."""
    import httpx

    out: dict[str, list[str]] = {}
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", "Authorization": f"Bearer {tok}"}
    with httpx.Client(timeout=120.0) as client:
        for i in range(patients):
            entries = [{"fullUrl": "urn:uuid:p", "request": {"method": "POST", "url": "Patient"}, "resource": br.bench_patient(i)}]
            for k in range(obs):
                entries.append({"request": {"method": "POST", "url": "Observation"}, "resource": {
                    "resourceType": "Observation", "status": "final", "subject": {"reference": "urn:uuid:p"},
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
                    "effectiveDateTime": f"2025-{1 + k % 12:02d}-{1 + k % 28:02d}T10:00:00Z",
                    "valueQuantity": {"value": 60 + k % 40, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}})
            r = client.post(base, content=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}), headers=headers)
            r.raise_for_status()
            locs = [e["response"]["location"].split("/")[1] for e in r.json()["entry"]]
            out[locs[0]] = locs[1:]
    return out


def bench_backend(backend: str, db_url: str, args, client, work: Path, log_dir: Path) -> dict:
    print(f"\n== {backend} ==", flush=True)
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(db_url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    else:
        recreate_pg_database(db_url)
    env = {**os.environ, "FHIR_SERVER_RUN_BACKGROUND_JOBS": "false", "FHIR_SERVER_DATABASE_URL": db_url,
           "FHIR_SERVER_ACCESS_LOG": "off"}
    serve = [sys.executable, "-m", "fhir_server.cli", "serve", "--host", "127.0.0.1", "--workers", str(args.workers),
             "--database-url", db_url, "--log-level", "warning", "--port"]
    pport, oport = free_port(), free_port()
    protected = br.Proc(f"protected-{backend}", serve + [str(pport)], {**env, "FHIR_SERVER_AUDIT": "on"}, log_dir)
    opened = noaudit = None
    try:
        br.wait_ready(protected, f"http://127.0.0.1:{pport}/fhir/metadata")
        opened = br.Proc(f"open-{backend}", serve + [str(oport)], {**env, "FHIR_SERVER_AUTH": "off", "FHIR_SERVER_AUDIT": "off"}, log_dir)
        br.wait_ready(opened, f"http://127.0.0.1:{oport}/fhir/metadata")
        if args.split:  # protection on, access log off: what the token and policy cost alone
            nport = free_port()
            noaudit = br.Proc(f"noaudit-{backend}", serve + [str(nport)], {**env, "FHIR_SERVER_AUDIT": "off"}, log_dir)
            br.wait_ready(noaudit, f"http://127.0.0.1:{nport}/fhir/metadata")
        system = token(db_url, pport, env, "system/*.*")
        t0 = time.perf_counter()
        data = preload(f"http://127.0.0.1:{pport}/fhir", args.patients, args.obs, system)
        print(f"preloaded {args.patients} Patients x {args.obs} Observations in {time.perf_counter() - t0:.1f}s", flush=True)
        pid = sorted(data)[len(data) // 2]
        ptoken = token(db_url, pport, env, "patient/*.rs", patient=pid)
        reads = work / f"reads-{backend}.txt"
        reads.write_text("".join(f"/fhir/Observation/{o}\n" for o in data[pid]))
        searches = work / f"search-{backend}.txt"
        searches.write_text(f"/fhir/Observation?patient={pid}&_count=10&_sort=-_lastUpdated\n")
        import httpx

        other = next(p for p in data if p != pid)
        hdr = {"Authorization": f"Bearer {ptoken}"}
        assert httpx.get(f"http://127.0.0.1:{pport}/fhir/Observation/{data[pid][0]}", headers=hdr).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{pport}/fhir/Observation/{data[other][0]}", headers=hdr).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{oport}/fhir/Observation/{data[other][0]}").status_code == 200
        ops = [("read-open", oport, reads, None), ("read-protected", pport, reads, ptoken),
               ("search-open", oport, searches, None), ("search-protected", pport, searches, ptoken)]
        if args.split:
            ntoken = token(db_url, nport, env, "patient/*.rs", patient=pid)
            ops += [("read-noaudit", nport, reads, ntoken), ("search-noaudit", nport, searches, ntoken)]
        if args.warmup > 0:
            for _op, port, paths, tok in ops:
                client.run("read", port, paths, args.warmup, tok)
        runs: dict[str, list] = {op: [] for op, *_ in ops}
        backlog = AuditBacklog(db_url)

        for rep in range(args.reps):
            for op, port, paths, tok in ops:
                before = backlog.logged() if args.drain and op.endswith("-protected") else None
                res = client.run("read", port, paths, args.duration, tok)
                drained = ""
                if before is not None:
                    # until every request of the run is in the access log: the access log's whole
                    # cost falls inside this run, none spills into the next server's run
                    drain = backlog.wait(before, res.requests)
                    res = br.RunResult(res.requests / (args.duration + drain), res.p50_ms, res.p99_ms, res.errors, res.requests)
                    drained = f"  (+{drain:.1f}s until all {res.requests} AuditEvents were in the log)"
                runs[op].append(res)
                err = f"  ERRORS {res.errors}" if res.errors else ""
                print(f"  rep {rep + 1}/{args.reps} {op:17s} {res.rps:8.0f} req/s  p50 {res.p50_ms:7.2f} ms  p99 {res.p99_ms:7.2f} ms{err}{drained}", flush=True)
        backlog.dispose()
        time.sleep(2.5)  # let the last AuditEvent batch be written
        count = httpx.get(f"http://127.0.0.1:{pport}/fhir/AuditEvent", params={"_summary": "count"},
                          headers={"Authorization": f"Bearer {system}"}).json().get("total")
        return {"runs": runs, "audit_events": count}
    finally:
        if noaudit is not None:
            noaudit.stop()
        if opened is not None:
            opened.stop()
        protected.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=50)
    ap.add_argument("--obs", type=int, default=40, help="Observations per patient (default 40)")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--backends", default="sqlite")
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--split", action="store_true", help="also measure protection without the access log (token + policy alone)")
    ap.add_argument("--no-drain", dest="drain", action="store_false",
                    help="do not wait, after each protected run, until its AuditEvents are in the log (by default that "
                         "time counts in the run's req/s, so deferred indexing cannot flatter it or slow the next run)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-protected-"))
    wrk = shutil.which("wrk") if args.client in ("auto", "wrk") else None
    client = br.WrkClient(wrk, args.threads, args.connections, work) if wrk else br.PythonClient(args.threads, args.connections)
    results = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        url = f"sqlite:///{work / 'bench.sqlite'}" if backend == "sqlite" else args.pg_url
        if not url:
            print("postgres needs --pg-url", file=sys.stderr)
            continue
        results[backend] = bench_backend(backend, url, args, client, work, work)
    print(f"\nProtection cost: {args.patients} patients x {args.obs} Observations, client {client.name}, "
          f"{args.connections} connections, {args.workers} worker(s), {args.duration:g}s x {args.reps} reps (medians), "
          f"{os.cpu_count()} CPUs (shared machine: compare the ratios)")
    print(f"{'backend':8s} {'request':8s} {'open req/s':>11s} {'protected':>10s} {'ratio':>6s}  target >= {TARGET_PROTECTED_OVER_OPEN:.2f}   p50 open/prot ms")
    for backend, res in results.items():
        runs = res["runs"]
        for kind in ("read", "search"):
            o = statistics.median(r.rps for r in runs[f"{kind}-open"])
            p = statistics.median(r.rps for r in runs[f"{kind}-protected"])
            po = statistics.median(r.p50_ms for r in runs[f"{kind}-open"])
            pp = statistics.median(r.p50_ms for r in runs[f"{kind}-protected"])
            ok = "ok" if p / o >= TARGET_PROTECTED_OVER_OPEN else "BELOW"
            print(f"{backend:8s} {kind:8s} {o:11.0f} {p:10.0f} {p / o:6.2f}  {ok:14s} {po:6.2f} / {pp:6.2f}")
            if runs.get(f"{kind}-noaudit"):
                n = statistics.median(r.rps for r in runs[f"{kind}-noaudit"])
                print(f"{'':8s} {kind:8s} protected without the access log: {n:.0f} req/s ({n / o:.2f} of open)")
        print(f"{backend:8s} AuditEvents written by the protected server: {res['audit_events']}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
