#!/usr/bin/env python3
"""Read-by-id, search and create throughput of the FHIR server, against bare endpoints and the database floor.

For each backend (SQLite, and PostgreSQL when --pg-url is given) and each worker
count, the script

1. starts a fresh database and `fhir-server serve` in its own process group,
2. preloads --n Patients through transaction Bundles of 100 POST entries,
3. starts a bare FastAPI app (uvicorn, same worker count, TCP_NODELAY forced on)
   whose only route `GET /fhir/Patient/{id}` returns the exact bytes of one stored
   Patient read, and probes both servers for the ~40 ms keep-alive delay of a
   missing TCP_NODELAY,
4. drives the three operations from a second process over loopback -
   `bare`   GET /fhir/Patient/{random preloaded id} on the bare app,
   `read`   the same requests on the FHIR server, each with a valid bearer token
            (system/*.*, from `fhir-server token`),
   `noauth` the same requests on a second FHIR server process on the same database
            with protection off (FHIR_SERVER_AUTH=off): the unauthenticated read
            (`--audit off` runs both servers without the access log, so that
            read/noauth is what the token alone costs: issue 12's ratio),
   `search` GET /fhir/Patient?family=F&birthdate=D (the issue's workload: --n 5000
            Patients, 100 per family; F and D of a random preloaded Patient), token on,
   `search-noauth` the same searches on the protection-off process,
   `search-engine` the same searches with `&_pretty=false`, which changes nothing in
            the answer but takes them through the router and the thread pool (the path
            before issue 19's fast search), token on,
   `floor`  the same searches' SQL, planned and compiled as the server does, run
            straight through the server's driver (asyncpg / sqlite3) from as many
            connections as the load generator opens, rows fetched (search_floor.py),
   `create` POST /fhir/Patient with a varying Patient body (and on PostgreSQL
            `create-floor`: bench_db_floor.py's create transactions, 30 index rows,
            as many threads, on a database of its own) -
   with `wrk` (Debian package) or, when wrk is absent, an asyncio + httpx client
   running in separate processes,
5. after each run against a FHIR server (the access log is on unless --audit off), waits until every request of
   the run is an event in the access log and counts that wait in the run's req/s (read events are
   written in batches up to a second later, docs/audit.md; otherwise that work lands in the next run),
6. repeats the runs --reps times (interleaved, after a warm-up) and prints
   the medians of req/s, p50 and p99 latency, the read/bare ratio, the
   authenticated/unauthenticated ratios, search/floor and create/create-floor
   (ratios per repetition, then the median: the machine may be shared).

Run with the project's virtualenv:

    .venv/bin/python bench/bench_rest.py --duration 10 \
        --pg-url postgresql+psycopg://postgres@127.0.0.1:55433/fhir_bench

The PostgreSQL database named in --pg-url is dropped and recreated for every
server start. It prints figures; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from benchlib import AuditBacklog, free_port, recreate_pg_database, stop_group
from rest_common import (
    NAGLE_SUSPECT_MS, NAGLE_WARNINGS, Proc, PythonClient, RunResult, WrkClient, _auth, _client_main, bench_patient,
    family_of, keepalive_probe, preload, server_token, wait_ready,
)

BENCH_DIR = Path(__file__).resolve().parent
BARE_BODY_ENV = "FHIR_BENCH_BARE_BODY_FILE"

# Targets from the issue (2-core machine).
TARGET_READ_OVER_BARE = 0.50
TARGET_PG_CREATES_PER_S = 2500.0
TARGET_AUTH_OVER_NOAUTH = 0.80  # issue 12: an authenticated read keeps >= 80% of the unauthenticated one
TARGET_SEARCH_OVER_FLOOR = 0.50  # issue 19
TARGET_CREATE_OVER_FLOOR = 0.50  # issue 19
PER_FAMILY = 100  # issue 19's search workload: 100 Patients per family


# --------------------------------------------------------------------------------------
# The bare endpoint (launched by uvicorn in a subprocess: "bench_rest:bare_app_factory")
# --------------------------------------------------------------------------------------


def bare_app_factory():
    from fastapi import FastAPI, Response

    body = Path(os.environ[BARE_BODY_ENV]).read_bytes()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/fhir/Patient/{resource_id}")
    async def read(resource_id: str) -> Response:
        return Response(content=body, media_type="application/fhir+json")

    @app.get("/fhir/metadata")
    async def metadata() -> Response:
        return Response(content=b'{"resourceType":"CapabilityStatement"}', media_type="application/fhir+json")

    return app


def serve_bare(port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "bench_rest:bare_app_factory",
        factory=True,
        app_dir=str(BENCH_DIR),
        http="fhir_server.api.protocol:NoDelayHTTPProtocol",  # the same protocol as the server
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    workers: int
    op: str
    runs: list[RunResult] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


def bench_one(backend: str, db_url: str, workers: int, args, client, work: Path, log_dir: Path) -> list[Row]:
    tag = f"{backend}-w{workers}"
    print(f"\n== {backend}, {workers} worker(s) ==", flush=True)
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(db_url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    else:
        recreate_pg_database(db_url)

    env = dict(os.environ)
    env["FHIR_SERVER_RUN_BACKGROUND_JOBS"] = "false"
    env["FHIR_SERVER_DATABASE_URL"] = db_url
    env["FHIR_SERVER_AUDIT"] = args.audit  # both servers alike: off isolates what the token costs (issue 12)
    env.pop(BARE_BODY_ENV, None)

    port = free_port()
    server = Proc(
        f"server-{tag}",
        [sys.executable, "-m", "fhir_server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--database-url", db_url, "--log-level", "warning"],
        env, log_dir,
    )
    bare = noauth = None
    try:
        wait_ready(server, f"http://127.0.0.1:{port}/fhir/metadata")
        base = f"http://127.0.0.1:{port}/fhir"
        token = server_token(db_url, port, env)
        t0 = time.perf_counter()
        families = max(1, args.n // PER_FAMILY)
        ids = preload(base, args.n, token=token, families=families)
        dt = time.perf_counter() - t0
        print(f"preloaded {len(ids)} Patients in {dt:.1f}s ({len(ids) / dt:.0f}/s via transaction bundles)", flush=True)
        if backend != "sqlite":
            # planner statistics for the freshly loaded tables, as autovacuum would gather them a
            # little later: without them the first runs measure bad plans (floor 440 vs 2,370 req/s)
            from sqlalchemy import create_engine, text

            stats = create_engine(db_url)
            with stats.connect() as conn:
                conn.execute(text("ANALYZE"))
            stats.dispose()

        paths_file = work / f"paths-{tag}.txt"
        paths_file.write_text("".join(f"/fhir/Patient/{i}\n" for i in ids))
        search_file = work / f"search-{tag}.txt"
        rnd = random.Random(19)
        picks = [rnd.randrange(args.n) for _ in range(2000)]
        search_file.write_text("".join(
            f"/fhir/Patient?family={quote(family_of(i, families))}&birthdate={bench_patient(i)['birthDate']}\n" for i in picks))
        engine_file = work / f"search-engine-{tag}.txt"
        engine_file.write_text("".join(f"{line}&_pretty=false\n" for line in search_file.read_text().splitlines()))

        import httpx

        r = httpx.get(f"{base}/Patient/{ids[len(ids) // 2]}", headers={"Accept": "application/fhir+json", **_auth(token)})
        r.raise_for_status()
        body_file = work / f"bare-body-{tag}.json"
        body_file.write_bytes(r.content)
        print(f"read response: {len(r.content)} bytes, content-type {r.headers.get('content-type')}", flush=True)

        bare_port = free_port()
        bare_env = dict(env)
        bare_env[BARE_BODY_ENV] = str(body_file)
        bare = Proc(
            f"bare-{tag}",
            [sys.executable, str(Path(__file__).resolve()), "--_serve-bare", "--_port", str(bare_port),
             "--workers", str(workers)],
            bare_env, log_dir,
        )
        wait_ready(bare, f"http://127.0.0.1:{bare_port}/fhir/metadata")
        rb = httpx.get(f"http://127.0.0.1:{bare_port}/fhir/Patient/{ids[0]}")
        assert rb.content == r.content

        noauth_port = free_port()
        noauth = Proc(
            f"noauth-{tag}",
            [sys.executable, "-m", "fhir_server.cli", "serve", "--host", "127.0.0.1", "--port", str(noauth_port),
             "--workers", str(workers), "--database-url", db_url, "--log-level", "warning"],
            {**env, "FHIR_SERVER_AUTH": "off"}, log_dir,
        )
        wait_ready(noauth, f"http://127.0.0.1:{noauth_port}/fhir/metadata")
        assert httpx.get(f"http://127.0.0.1:{noauth_port}/fhir/Patient/{ids[0]}").status_code == 200
        assert httpx.get(f"{base}/Patient/{ids[0]}").status_code == 401  # the measured server does check tokens

        probe_server = keepalive_probe(port, f"/fhir/Patient/{ids[0]}", token)
        probe_bare = keepalive_probe(bare_port, f"/fhir/Patient/{ids[0]}")
        print(f"keep-alive probe (1 connection, sequential GETs): server {probe_server:.1f} ms, "
              f"bare {probe_bare:.1f} ms", flush=True)
        if probe_server >= NAGLE_SUSPECT_MS:
            print(f"WARNING: server answers keep-alive requests in ~{probe_server:.0f} ms. TCP_NODELAY is probably "
                  "missing (uvicorn --workers > 1 binds the socket with proto 0, Kludex/uvicorn#3149), so every "
                  "request after the first on a connection waits for the client's delayed ACK.", flush=True)
            NAGLE_WARNINGS.append(tag)

        hs = httpx.get(f"{base}/Patient?family={family_of(0, families)}", headers=_auth(token)).json()
        print(f"search: {hs.get('total')} Patients per family; "
              f"{len(httpx.get('http://127.0.0.1:%d' % port + search_file.read_text().split(chr(10))[0], headers=_auth(token)).json().get('entry', []))}"
              " match(es) for the first search path", flush=True)

        floor_url = None
        if backend == "postgres":
            from bench_db_floor import run as create_floor
            from sqlalchemy.engine import make_url

            from fhir_server.storage.database import Database
            from fhir_server.storage.migrate import upgrade

            u = make_url(db_url)
            floor_url = u.set(database=f"{u.database}_floor")
            recreate_pg_database(floor_url.render_as_string(hide_password=False))
            fdb = Database(floor_url.render_as_string(hide_password=False))
            upgrade(fdb.engine)
            fdb.dispose()
            floor_url = (f"host={u.host} port={u.port or 5432} dbname={floor_url.database} user={u.username}"
                         + (f" password={u.password}" if u.password else ""))

        def run_op(op: str, p: int, tok: str | None, duration: float) -> RunResult:
            if op == "floor":
                out = subprocess.run([sys.executable, str(BENCH_DIR / "search_floor.py"), "--db-url", db_url,
                                      "--paths", str(search_file), "--connections", str(args.connections),
                                      "--procs", str(workers), "--duration", str(duration)],
                                     env=env, capture_output=True, text=True, check=True)
                d = json.loads(out.stdout)
                return RunResult(d["rps"], d["p50_ms"], d["p99_ms"], 0, d["requests"])
            if op == "create-floor":
                rate, _, _ = create_floor(floor_url, args.connections, duration, 30)
                return RunResult(rate, float("nan"), float("nan"), 0, int(rate * duration))
            if op in ("search", "search-noauth"):
                return client.run("read", p, search_file, duration, tok)
            if op == "search-engine":
                return client.run("read", p, engine_file, duration, tok)
            return client.run("read" if op == "noauth" else op, p, paths_file, duration, tok)

        ops = [("bare", bare_port, None), ("noauth", noauth_port, None), ("read", port, token),
               ("search", port, token), ("search-noauth", noauth_port, None), ("search-engine", port, token),
               ("floor", 0, None),
               ("create", port, token)]
        if floor_url:
            ops.append(("create-floor", 0, None))
        ops = [o for o in ops if o[0] in args.ops]
        duration_of = lambda op: args.duration  # noqa: E731
        if args.warmup > 0:
            for op, p, tok in ops:
                run_op(op, p, tok, args.warmup)
        rows = {op: Row(backend, workers, op) for op, _, _ in ops}
        backlog = AuditBacklog(db_url)

        for rep in range(args.reps):
            for op, p, tok in ops:  # interleaved so that a noisy phase hits all alike
                audited = args.audit != "off" and op in ("read", "search", "noauth", "search-noauth")
                before = backlog.logged() if audited else None
                res = run_op(op, p, tok, args.duration)
                drained = ""
                if before is not None:
                    # read events are written up to a second later (docs/audit.md): wait until every request of the run
                    # is an AuditEvent and count the wait in the run, so that work neither flatters this
                    # figure nor lands in the next run (it made SQLite's creates look like 5-11/s)
                    wait = backlog.wait(before, res.requests)
                    res = RunResult(res.requests / (duration_of(op) + wait), res.p50_ms, res.p99_ms, res.errors, res.requests)
                    drained = f"  (+{wait:.1f}s until its AuditEvents were in the log)"
                rows[op].runs.append(res)
                err = f"  ERRORS {res.errors}" if res.errors else ""
                print(f"  rep {rep + 1}/{args.reps} {op:13s} {res.rps:9.0f} req/s  p50 {res.p50_ms:7.2f} ms"
                      f"  p99 {res.p99_ms:7.2f} ms{err}{drained}", flush=True)
        backlog.dispose()
        return list(rows.values())
    finally:
        if bare is not None:
            bare.stop()
        if noauth is not None:
            noauth.stop()
        server.stop()


def print_table(rows: list[Row], client_name: str, args) -> None:
    print()
    print(f"FHIR REST benchmark: N={args.n} preloaded Patients, client {client_name}, "
          f"{args.connections} connections, {args.threads} threads, {args.duration:g}s x {args.reps} reps "
          f"(medians), {os.cpu_count()} CPUs")
    head = f"{'backend':9s} {'workers':>7s} {'op':13s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s}"
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row.backend:9s} {row.workers:7d} {row.op:13s} {row.median('rps'):9.0f} "
              f"{row.median('p50_ms'):8.2f} {row.median('p99_ms'):8.2f} {row.errors:6d}")
    print()
    groups: dict[tuple[str, int], dict[str, Row]] = {}
    for row in rows:
        groups.setdefault((row.backend, row.workers), {})[row.op] = row
    def ratio(g: dict[str, Row], a: str, b: str) -> float:
        """Median over repetitions of a/b (the two ran back to back in each repetition)."""
        if a not in g or b not in g:
            return float("nan")
        rs = [x.rps / y.rps for x, y in zip(g[a].runs, g[b].runs) if y.rps]
        return statistics.median(rs) if rs else float("nan")

    def verdict(value: float, target: float) -> str:
        return f"{value:.2f} (target >= {target:.2f}: {'ok' if value >= target else 'BELOW TARGET'})"

    for (backend, workers), g in groups.items():
        parts = [f"read/bare = {verdict(ratio(g, 'read', 'bare'), TARGET_READ_OVER_BARE)}",
                 f"authenticated/unauthenticated read = {verdict(ratio(g, 'read', 'noauth'), TARGET_AUTH_OVER_NOAUTH)}",
                 f"search/floor = {verdict(ratio(g, 'search', 'floor'), TARGET_SEARCH_OVER_FLOOR)}",
                 f"search-noauth/floor = {ratio(g, 'search-noauth', 'floor'):.2f}",
                 f"authenticated/unauthenticated search = {ratio(g, 'search', 'search-noauth'):.2f}",
                 f"search/search-engine = {ratio(g, 'search', 'search-engine'):.2f}"]
        if "create-floor" in g:
            parts.append(f"create/create-floor = {verdict(ratio(g, 'create', 'create-floor'), TARGET_CREATE_OVER_FLOOR)}")
        if backend == "postgres" and "create" in g:
            c = g["create"].median("rps")
            parts.append(f"create = {c:.0f}/s (target >= {TARGET_PG_CREATES_PER_S:.0f}/s: "
                         f"{'ok' if c >= TARGET_PG_CREATES_PER_S else 'BELOW TARGET'})")
        if f"{backend}-w{workers}" in NAGLE_WARNINGS:
            parts.append("[server lacks TCP_NODELAY: ~40 ms per keep-alive request]")
        print(f"{backend:9s} workers={workers}: " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="Patients to preload, 100 per family (default 5000)")
    ap.add_argument("--ops", default="bare,noauth,read,search,search-noauth,search-engine,floor,create,create-floor",
                    help="comma-separated operations to measure (default: all)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per operation (default 3, 0 = none)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported (default 3)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite,postgres")
    ap.add_argument("--pg-url", default=None,
                    help="SQLAlchemy URL of a PostgreSQL database to DROP and recreate per run; postgres is skipped without it")
    ap.add_argument("--sqlite-path", default=None, help="SQLite file (default: in a temporary directory)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16, as the issue's figures)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (or client processes for the Python client; default 1)")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                    help="load generator: wrk if installed (auto), or the asyncio+httpx fallback")
    ap.add_argument("--audit", choices=["on", "off"], default="on",
                    help="the access log on both servers (default on; off measures the token alone, issue 12's ratio)")
    ap.add_argument("--json", default=None, help="also write all runs to this JSON file")
    ap.add_argument("--keep-logs", action="store_true", help="keep the server logs and temporary files")
    # internal: child-process entry points
    ap.add_argument("--_serve-bare", dest="serve_bare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_client", dest="client_op", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_port", dest="port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--_paths", dest="paths", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_conns", dest="conns", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--_tag", dest="tag", default="x", help=argparse.SUPPRESS)
    ap.add_argument("--_token", dest="token", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.ops = {o.strip() for o in args.ops.split(",") if o.strip()}

    if args.serve_bare:
        serve_bare(args.port, int(args.workers))
        return 0
    if args.client_op:
        data = asyncio.run(_client_main(args.client_op, args.port, args.paths, args.conns, args.duration, args.tag, args.token))
        sys.stdout.write(json.dumps(data))
        return 0

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown:
        ap.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if "postgres" in backends and not args.pg_url:
        print("PostgreSQL skipped: no --pg-url given", flush=True)
        backends.remove("postgres")
    if not backends:
        ap.error("no backend to run")
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]

    wrk = shutil.which("wrk")
    work = Path(tempfile.mkdtemp(prefix="fhir-bench-"))
    if args.client == "wrk" and not wrk:
        print("wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if wrk and args.client != "python":
        client = WrkClient(wrk, args.threads, args.connections, work)
    else:
        if args.client == "auto":
            print("NOTE: wrk not found (Debian: apt-get install -y wrk); falling back to the asyncio+httpx "
                  "client in separate processes. Its own overhead caps the figures, so compare ratios only.",
                  flush=True)
        client = PythonClient(args.threads, args.connections)
    print(f"load generator: {client.name}; work dir {work}", flush=True)

    rows: list[Row] = []
    try:
        for backend in backends:
            if backend == "sqlite":
                db_url = f"sqlite:///{args.sqlite_path or work / 'bench.sqlite'}"
            else:
                db_url = args.pg_url
            for w in worker_counts:
                rows += bench_one(backend, db_url, w, args, client, work, work)
    finally:
        if rows:
            print_table(rows, client.name, args)
            if args.json:
                Path(args.json).write_text(json.dumps(
                    [{"backend": r.backend, "workers": r.workers, "op": r.op,
                      "runs": [vars(x) for x in r.runs]} for r in rows], indent=2))
        if args.keep_logs:
            print(f"logs and files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
