#!/usr/bin/env python3
"""Latency of typical portal searches at 10k, 100k and 1M resources, SQLite and PostgreSQL.

For each backend and size the script

1. creates a fresh database (PostgreSQL: the one named by --pg-url is dropped and
   recreated; SQLite: a file under --work-dir), migrates it,
2. bulk-loads clones of the Synthea bundles plus synthetic Schedules / Slots /
   Appointments (see search_data.py: index rows are extracted once per template
   resource and cloned with new ids, COPY on PostgreSQL), rebuilds the indexes
   and runs ANALYZE,
3. starts `fhir-server serve` (background jobs off) and, from this process with
   one httpx client, issues --requests sequential requests per query kind with
   varied parameters after --warmup requests, and walks `next` links --pages
   pages deep,
4. times the same searches in-process through `execute_search` (no HTTP),
5. prints a table (p50, p99, req/s, in-process p50), the ratio of p50 at the
   largest to the smallest size, and the EXPLAIN (ANALYZE) of the slowest query
   at the largest size.

Run with the project's virtualenv:

    .venv/bin/python bench/bench_search.py --sizes 10000,100000,1000000 --db sqlite,postgres \
        --pg-url postgresql+psycopg://postgres@127.0.0.1:55433/fhir_search_bench

It prints figures; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import search_data as sd  # noqa: E402
from benchlib import free_port, recreate_pg_database, server_bearer_headers, stop_group  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:55433/fhir_search_bench"
TARGET_P50_MS = 10.0  # indexed single-parameter searches at 1M on PostgreSQL
TARGET_GROWTH = 2.0  # p50(1M) / p50(10k)
SINGLE_PARAM = {"patient-identifier", "slot-by-schedule", "obs-by-patient"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- queries


@dataclass
class Query:
    name: str
    res_type: str
    build: object  # (QuerySample) -> list[(name, value)]


def _week_after(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=7)).isoformat()


QUERIES = [
    Query("patient-identifier", "Patient", lambda s: [("identifier", f"{sd.SSN_SYSTEM}|{s.ssn}")]),
    Query("slot-by-schedule", "Slot", lambda s: [("schedule", f"Schedule/{s.schedule_id}")]),
    Query("obs-by-patient", "Observation", lambda s: [("subject", f"Patient/{s.patient_id}")]),
    Query("slots-free-week", "Slot", lambda s: [
        ("schedule", f"Schedule/{s.schedule_id}"), ("status", "free"),
        ("start", f"ge{s.schedule_first_day}"), ("start", f"lt{_week_after(s.schedule_first_day)}")]),
    Query("appts-by-patient-sorted", "Appointment", lambda s: [("patient", f"Patient/{s.patient_id}"),
                                                               ("_sort", "date")]),
    Query("obs-patient-code-date", "Observation", lambda s: [
        ("subject", f"Patient/{s.patient_id}"), ("code", f"{sd.LOINC}|{s.obs_code}"), ("date", f"ge{s.obs_date}")]),
    Query("chain-obs-subject.identifier", "Observation", lambda s: [
        ("subject:Patient.identifier", f"{sd.SSN_SYSTEM}|{s.ssn}")]),
    Query("patient-revinclude-obs", "Patient", lambda s: [("_id", s.patient_id),
                                                          ("_revinclude", "Observation:subject")]),
]


@dataclass
class Result:
    backend: str
    size: int
    query: str
    p50: float
    p99: float
    rps: float
    inproc_p50: float | None = None
    hits: str = ""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


# --------------------------------------------------------------------------- processes


class Server:
    def __init__(self, db_url: str, log_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        env = dict(os.environ, FHIR_SERVER_RUN_BACKGROUND_JOBS="false", FHIR_SERVER_AUTH_BASE_URL=self.base)
        self.env = env
        self.db_url = db_url
        exe = Path(sys.executable).with_name("fhir-server")
        argv = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--database-url", db_url,
                "--log-level", "warning"]
        self._log = open(log_path, "wb")
        self.log_path = log_path
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.base + "/metadata", headers=self.headers(), timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not start")

    def headers(self) -> dict[str, str]:
        """Every request carries a system/*.* bearer token from the server's own issuer."""
        if getattr(self, "_headers", None) is None:
            self._headers = server_bearer_headers(self.db_url, self.base, self.env)
        return self._headers

    def stop(self) -> None:
        stop_group(self.popen)
        self._log.close()


# --------------------------------------------------------------------------- measuring


def run_http(client, base: str, q: Query, samples, n: int, warmup: int,
             budget_s: float = 60.0) -> tuple[list[float], float, str]:
    def url_params(s):
        return f"{base}/{q.res_type}", q.build(s)

    for s in samples[:warmup]:
        u, p = url_params(s)
        client.get(u, params=p).raise_for_status()
    lat = []
    hits = []
    t0 = time.perf_counter()
    for i in range(n):
        if time.perf_counter() - t0 > budget_s:  # a slow query: fewer samples rather than hours
            break
        u, p = url_params(samples[i % len(samples)])
        t = time.perf_counter()
        resp = client.get(u, params=p)
        lat.append((time.perf_counter() - t) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{q.name}: HTTP {resp.status_code}: {resp.text[:500]}")
        if i < 20:
            b = resp.json()
            hits.append((b.get("total"), len(b.get("entry", []))))
    wall = time.perf_counter() - t0
    n = len(lat)
    tot = [h[0] for h in hits if h[0] is not None]
    ent = [h[1] for h in hits]
    desc = f"total~{statistics.median(tot):g}" if tot else ""
    desc += f" entries~{statistics.median(ent):g} n={n}"
    return lat, n / wall, desc


def run_inproc(engine, q: Query, samples, n: int, base: str, budget_s: float = 30.0) -> list[float]:
    """execute_search on one autocommit connection, as the server's reads run (Database.read)."""
    from fhir_server.search.engine import SearchRequest, execute_search

    lat = []
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        t0 = time.perf_counter()
        for i in range(min(n, len(samples))):
            if time.perf_counter() - t0 > budget_s:
                break
            req = SearchRequest(q.res_type, q.build(samples[i]), base)
            t = time.perf_counter()
            execute_search(conn, req)
            lat.append((time.perf_counter() - t) * 1000)
    return lat


def page_walk(client, base: str, path: str, params: list, pages: int,
              budget_s: float = 180.0) -> tuple[list[float], str | None]:
    """Follow next links (at most `budget_s` seconds); latency per page, and the URL of the last page."""
    lat = []
    t_start = time.perf_counter()
    url: str | None = f"{base}/{path}"
    last_url = None
    first = True
    for _ in range(pages):
        if url is None or time.perf_counter() - t_start > budget_s:
            break
        t = time.perf_counter()
        resp = client.get(url, params=params if first else None)
        lat.append((time.perf_counter() - t) * 1000)
        resp.raise_for_status()
        last_url = str(resp.request.url)
        first = False
        url = next((lk["url"] for lk in resp.json().get("link", []) if lk["relation"] == "next"), None)
    return lat, last_url


# --------------------------------------------------------------------------- EXPLAIN


def explain(engine, res_type: str, params: list, base: str) -> str:
    """Run the search in-process capturing its SQL; EXPLAIN (ANALYZE) each statement, show the slowest."""
    from sqlalchemy import event

    from fhir_server.search.engine import SearchRequest, execute_search

    captured: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        with engine.connect() as conn:
            execute_search(conn, SearchRequest(res_type, params, base))
            conn.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    pg = engine.dialect.name == "postgresql"
    out = []
    plans = []
    with engine.connect() as conn:
        for stmt, p in captured:
            if not stmt.lstrip().upper().startswith("SELECT"):
                continue
            prefix = "EXPLAIN (ANALYZE, BUFFERS) " if pg else "EXPLAIN QUERY PLAN "
            t = time.perf_counter()
            rows = conn.exec_driver_sql(prefix + stmt, p).all()
            ms = (time.perf_counter() - t) * 1000
            text = "\n".join(str(r[0]) if pg else f"{r[0]}|{r[1]}|{r[3]}" for r in rows)
            if pg:
                for line in text.splitlines():
                    if line.startswith("Execution Time:"):
                        ms = float(line.split()[2])
            plans.append((ms, stmt, p, text))
        conn.rollback()
    for ms, stmt, p, _ in plans:
        out.append(f"  statement {ms:9.2f} ms: {' '.join(stmt.split())[:160]}...")
    if plans:
        ms, stmt, p, text = max(plans, key=lambda x: x[0])
        out.append("\nSlowest statement:\n" + stmt + f"\nparams: {p}\n\nEXPLAIN (ANALYZE, BUFFERS), custom plan:\n" + text)
        if pg:
            out.append("\nThe same as a prepared statement with a GENERIC plan (what psycopg's automatic "
                       "prepare, after 5 runs on a pooled connection, makes PostgreSQL use):\n"
                       + generic_plan(engine, stmt, p))
    return "\n".join(out)


def generic_plan(engine, stmt: str, params: dict) -> str:
    import re

    from psycopg import sql

    names: list[str] = []

    def sub(m):
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    body = re.sub(r"%\(([^)]+)\)s", sub, stmt)
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        dbapi.autocommit = True
        dbapi.execute("SET plan_cache_mode = force_generic_plan")
        dbapi.execute("DEALLOCATE ALL")
        dbapi.execute(f"PREPARE bench_generic AS {body}")
        ex = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_generic({})").format(
            sql.SQL(", ").join(sql.Literal(params[n]) for n in names))
        rows = dbapi.execute(ex).fetchall()
        dbapi.execute("DEALLOCATE bench_generic")
        dbapi.execute("RESET plan_cache_mode")
        return "\n".join(r[0] for r in rows)
    finally:
        raw.invalidate()


# --------------------------------------------------------------------------- main


def bench_one(backend: str, size: int, args, templates, results: list[Result], page_results: list,
              explains: dict) -> None:
    from fhir_server.storage.db import make_engine
    from fhir_server.storage.migrate import upgrade

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if backend == "postgres":
        url = args.pg_url
        recreate_pg_database(url)
    else:
        db_path = work / f"search-{size}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(str(db_path) + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{db_path}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()

    clones = sd.plan_clones(templates, size)
    log(f"[{backend} {size}] loading {len(clones)} bundle clones")
    if backend == "postgres":
        stats = sd.load_postgres(url, templates, clones, versions=not args.no_versions, log=log)
    else:
        stats = sd.load_sqlite(str(db_path), templates, clones, versions=not args.no_versions, log=log)
    print(f"[{backend} {size}] loaded {stats.resources} resources, {stats.index_rows} index rows: "
          f"rows {stats.seconds_generate:.1f}s ({stats.resources / stats.seconds_generate:.0f} res/s, "
          f"{stats.index_rows / stats.seconds_generate:.0f} index rows/s), index build {stats.seconds_index:.1f}s, "
          f"analyze {stats.seconds_analyze:.1f}s => {stats.resources / stats.total_seconds:.0f} res/s overall; "
          f"Observation {stats.by_type.get('Observation', 0)}, Slot {stats.by_type.get('Slot', 0)}, "
          f"Appointment {stats.by_type.get('Appointment', 0)}, Patient {stats.by_type.get('Patient', 0)}",
          flush=True)

    samples = sd.query_samples(templates, clones, args.requests + args.warmup)
    common = sd.most_common_loinc(templates)
    import httpx

    server = Server(url, work / f"server-{backend}-{size}.log")
    engine = make_engine(url)
    try:
        server.wait_ready()
        with httpx.Client(timeout=600, headers=server.headers()) as client:
            for q in QUERIES:
                if args.queries and q.name not in args.queries:
                    continue
                lat, rps, hits = run_http(client, server.base, q, samples, args.requests, args.warmup,
                                          args.query_budget)
                inproc = run_inproc(engine, q, samples[args.warmup:], args.inproc_requests, server.base) \
                    if args.inproc_requests else []
                res = Result(backend, size, q.name, pct(lat, 50), pct(lat, 99), rps,
                             pct(inproc, 50) if inproc else None, hits)
                results.append(res)
                log(f"  {q.name:32s} p50 {res.p50:8.2f} ms  p99 {res.p99:8.2f} ms  {rps:7.1f} req/s  "
                    f"in-process p50 {res.inproc_p50 or float('nan'):8.2f} ms  {hits}")
                explains.setdefault((backend, size), []).append((res.p50, q.res_type, q.build(samples[0]), q.name))
            walks = [("Observation", [("code", f"{sd.LOINC}|{common}"), ("_sort", "date"), ("_count", "20")],
                      "page-obs-code-sort-date"),
                     ("Observation", [("_sort", "date"), ("_count", "20")], "page-obs-sort-date"),
                     ("Observation", [("_count", "20")], "page-obs-unsorted")]
            for path, params, name in walks:
                if args.queries and name not in args.queries:
                    continue
                per_page: list[list[float]] = []
                last = None
                for w in range(args.walks):
                    lat, last = page_walk(client, server.base, path, params, args.pages, args.walk_budget)
                    per_page.append(lat)
                    if lat[0] > 5000:  # a walk this slow: one is enough
                        break
                first = [x[0] for x in per_page]
                lastp = [x[-1] for x in per_page]
                allp = [y for x in per_page for y in x]
                n_pages = len(per_page[0])
                page_results.append((backend, size, name, statistics.median(first), statistics.median(lastp),
                                     n_pages, statistics.median(allp)))
                results.append(Result(backend, size, name + f"@p{n_pages}", statistics.median(lastp),
                                      max(allp), 1000 / statistics.mean(allp), None, f"{n_pages} pages"))
                log(f"  {name:32s} page1 {statistics.median(first):8.2f} ms  page{n_pages} "
                    f"{statistics.median(lastp):8.2f} ms  all-pages p50 {statistics.median(allp):8.2f} ms")
                if last:
                    qs = parse_qsl(urlsplit(last).query, keep_blank_values=True)
                    explains.setdefault((backend, size), []).append((statistics.median(lastp), path, qs,
                                                                     name + f"@p{n_pages}"))
        if backend == "postgres" or args.explain_sqlite:
            cands = explains.get((backend, size), [])
            if cands:
                slowest = max(cands, key=lambda c: c[0])
                chosen = [slowest] + [c for c in cands if c[3] in args.explain and c is not slowest]
                texts = []
                for p50, res_type, params, name in chosen:
                    texts.append((name, res_type, params, explain(engine, res_type, params, server.base)))
                explains[("text", backend, size)] = texts
    finally:
        server.stop()
        engine.dispose()


def print_tables(results: list[Result], page_results: list, sizes: list[int]) -> None:
    print()
    print(f"{'backend':9s} {'size':>8s}  {'query':36s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} "
          f"{'inproc p50':>10s}  hits")
    print("-" * 110)
    for r in results:
        ip = f"{r.inproc_p50:10.2f}" if r.inproc_p50 is not None else f"{'':10s}"
        print(f"{r.backend:9s} {r.size:8d}  {r.query:36s} {r.p50:8.2f} {r.p99:8.2f} {r.rps:8.1f} {ip}  {r.hits}")
    if page_results:
        print()
        print(f"{'backend':9s} {'size':>8s}  {'deep paging':28s} {'page 1 ms':>10s} {'last page ms':>13s} "
              f"{'pages':>6s} {'all p50':>8s}")
        for b, s, name, p1, pl, n, pa in page_results:
            print(f"{b:9s} {s:8d}  {name:28s} {p1:10.2f} {pl:13.2f} {n:6d} {pa:8.2f}")
    # growth ratios
    print()
    lo, hi = min(sizes), max(sizes)
    if lo != hi:
        print(f"p50 growth ratio {hi}/{lo} (target <= {TARGET_GROWTH:g}); p50 target at {hi}: "
              f"< {TARGET_P50_MS:g} ms for single-parameter searches on PostgreSQL")
        by = {(r.backend, r.size, r.query): r for r in results}
        for backend in sorted({r.backend for r in results}):
            for q in dict.fromkeys(r.query for r in results if r.backend == backend):
                a, b = by.get((backend, lo, q)), by.get((backend, hi, q))
                if not a or not b:
                    continue
                ratio = b.p50 / a.p50
                flags = []
                flags.append("ok" if ratio <= TARGET_GROWTH else "GROWS")
                if backend == "postgres" and q in SINGLE_PARAM:
                    flags.append("p50 ok" if b.p50 < TARGET_P50_MS else "p50 OVER TARGET")
                print(f"  {backend:9s} {q:36s} {a.p50:8.2f} -> {b.p50:8.2f} ms  x{ratio:5.2f}  {' '.join(flags)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000", help="comma-separated resource counts, e.g. 10000,100000,1000000")
    ap.add_argument("--db", default="sqlite,postgres", help="backends: sqlite,postgres")
    ap.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL database (dropped and recreated)")
    ap.add_argument("--work-dir", default="/tmp/fhir-search-bench", help="SQLite files, server logs")
    ap.add_argument("--requests", type=int, default=200, help="measured requests per query kind")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--inproc-requests", type=int, default=100, help="in-process execute_search runs (0 = skip)")
    ap.add_argument("--pages", type=int, default=50, help="deep paging: pages per walk")
    ap.add_argument("--walks", type=int, default=3, help="deep paging: walks per query")
    ap.add_argument("--query-budget", type=float, default=60.0, help="seconds per query kind at most")
    ap.add_argument("--walk-budget", type=float, default=180.0, help="deep paging: seconds per walk at most")
    ap.add_argument("--queries", default="", help="only these query names (comma-separated)")
    ap.add_argument("--no-versions", action="store_true", help="do not fill resource_versions")
    ap.add_argument("--explain", default="slots-free-week,obs-patient-code-date",
                    help="also EXPLAIN these queries at the largest size (comma-separated)")
    ap.add_argument("--explain-sqlite", action="store_true", help="also EXPLAIN QUERY PLAN on SQLite")
    args = ap.parse_args()
    args.queries = [q for q in args.queries.split(",") if q]
    args.explain = [q for q in args.explain.split(",") if q]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    backends = [b.strip() for b in args.db.split(",") if b.strip()]

    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    templates = sd.load_templates(cache_dir=Path(args.work_dir), log=log)
    per_bundle = sum(len(t.resources) for t in templates) / len(templates)
    log(f"{len(templates)} bundle templates, {per_bundle:.0f} resources per bundle on average")

    results: list[Result] = []
    page_results: list = []
    explains: dict = {}
    for backend in backends:
        for size in sizes:
            bench_one(backend, size, args, templates, results, page_results, explains)
    print_tables(results, page_results, sizes)
    for backend in backends:
        key = ("text", backend, max(sizes))
        for i, (name, res_type, params, text) in enumerate(explains.get(key, [])):
            what = "the slowest query" if i == 0 else "query"
            print(f"\n=== EXPLAIN of {what} on {backend} at {max(sizes)}: {name}: {res_type}?"
                  f"{'&'.join(f'{k}={v}' for k, v in params)[:300]}")
            print(text)


if __name__ == "__main__":
    main()
