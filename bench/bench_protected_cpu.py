#!/usr/bin/env python3
"""What protection costs per request and per AuditEvent, measured in process (no wrk, no sockets).

bench_protected.py measures throughput over HTTP, which a shared 2-core machine makes noisy.
This script measures the same two requests of issue 13's target by calling the ASGI app
directly (one asyncio loop, a hand-made HTTP scope, the app's lifespan run as uvicorn runs it)
on one database preloaded like bench_protected.py (--patients Patients x --obs Observations):

  read    GET /fhir/Observation/{id}                                 (one of the patient's)
  search  GET /fhir/Observation?patient={id}&_count=10&_sort=-_lastUpdated

each on `open` (FHIR_SERVER_AUTH=off, FHIR_SERVER_AUDIT=off, no token), `noaudit` (patient
token patient/*.rs with SMART patient context, access log off) and `protected` (the same token,
access log on). The cases take turns request by request. Per case it prints the median and mean
wall time per request, the median and mean CPU time per request (thread_time of the serving
thread: these paths run on the event loop, so a shared machine's other load does not count),
the ratio open/this case of that CPU time (the throughput ratio if CPU bound), and the SQL
statements per request (SQLAlchemy engines and the event-loop reader's driver connection).

The access log's writer is a thread with a flush interval of an hour during the request runs,
so the request figures hold only what the request path pays (building the facts, the queue
append); what each event costs later is measured apart over the events the runs queued:
`pickle` (what the process writer's sender thread does per event in the server process on
PostgreSQL: the encoded events of a batch pickled for the pipe) and `write` (AuditWriter.flush: the patients looked
up, each event one row of the log with its reference rows, audit.log), in events/s and CPU
microseconds per event, with the part spent in the cyclic garbage collector (gc.callbacks)
by generation.

--gc-freeze does what `fhir-server serve` does after start-up (api.app.app_factory: gc.freeze):
without it a full collection walks the whole start-up heap (~0.2 s here), and where one falls
decides much of a per-event figure. --profile prints cProfile's top functions for the write
and the protected read and search, and the own time per function of a protected read minus an
open one. --skip-requests measures only the per-event figures.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_protected_cpu.py --n 300 --reps 5
    PYTHONPATH=$PWD .venv/bin/python bench/bench_protected_cpu.py --pg-url postgresql+psycopg://postgres@127.0.0.1:55433/fhir_protect_cpu

It prints figures and asserts nothing (a crude sanity check of the answers aside).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pickle
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
AUDIENCE = "http://testserver/fhir"


def _key() -> str:
    from joserfc.jwk import RSAKey

    fd, path = tempfile.mkstemp(prefix="bench-protected-key-", suffix=".pem")
    with os.fdopen(fd, "wb") as fh:
        fh.write(RSAKey.generate_key(2048, private=True).as_pem(private=True))
    return path


class GcClock:
    """Time spent in the cyclic garbage collector (gc.callbacks), by generation."""

    def __init__(self):
        import gc

        self.spent = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._t = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
        else:
            g = info["generation"]
            self.spent[g] += time.perf_counter() - self._t
            self.runs[g] += 1

    def reset(self):
        self.spent, self.runs = [0.0, 0.0, 0.0], [0, 0, 0]

    def total(self) -> float:
        return sum(self.spent)


class Asgi:
    """One app driven directly: lifespan started once, each request one scope."""

    def __init__(self, app):
        self.app = app
        self.state: dict = {}
        self._lifespan = None

    async def start(self):
        self._lifespan = self.app.router.lifespan_context(self.app)
        st = await self._lifespan.__aenter__()
        self.state = dict(st or {})

    async def stop(self):
        await self._lifespan.__aexit__(None, None, None)

    async def request(self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, bytes]:
        path, _, query = target.partition("?")
        raw = [(b"host", b"testserver"), (b"accept", b"application/fhir+json")]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if body:
            raw.append((b"content-length", str(len(body)).encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "", "headers": raw,
                 "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": dict(self.state)}
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        status = 0
        chunks: list[bytes] = []

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def preload(app: Asgi, loop, patients: int, obs: int, headers: dict) -> dict[str, list[str]]:
    import orjson
    from rest_common import bench_patient

    out: dict[str, list[str]] = {}
    for i in range(patients):
        entries = [{"fullUrl": "urn:uuid:p", "request": {"method": "POST", "url": "Patient"}, "resource": bench_patient(i)}]
        for k in range(obs):
            entries.append({"request": {"method": "POST", "url": "Observation"}, "resource": {
                "resourceType": "Observation", "status": "final", "subject": {"reference": "urn:uuid:p"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
                "effectiveDateTime": f"2025-{1 + k % 12:02d}-{1 + k % 28:02d}T10:00:00Z",
                "valueQuantity": {"value": 60 + k % 40, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}})
        body = orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        status, raw = loop.run_until_complete(app.request("POST", "/fhir", {**headers, "content-type": "application/fhir+json"}, body))
        assert status == 200, (status, raw[:300])
        locs = [e["response"]["location"].split("/")[1] for e in orjson.loads(raw)["entry"]]
        out[locs[0]] = locs[1:]
    return out


def count_statements(db, counter: list[int]) -> None:
    from sqlalchemy import event

    def bump(*_a, **_k):
        counter[0] += 1

    for engine in {db.engine, db._autocommit}:
        event.listen(engine, "before_cursor_execute", bump)


def count_reader(asgi: Asgi, counter: list[int]) -> None:
    from fhir_server.api.fast_read import FAST_READER

    reader = asgi.state.get(FAST_READER)
    if reader is not None:
        for name in ("read_current", "fetch"):
            orig = getattr(reader, name, None)
            if orig is None:
                continue

            async def wrapped(*a, _orig=orig, **k):
                counter[0] += 1
                return await _orig(*a, **k)

            setattr(reader, name, wrapped)


def top(profile: cProfile.Profile, title: str, n: int) -> None:
    for key in ("tottime", "cumulative"):
        s = io.StringIO()
        pstats.Stats(profile, stream=s).strip_dirs().sort_stats(key).print_stats(n)
        lines = s.getvalue().splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls")), 0)
        print(f"\n-- cProfile {title}, by {key} --")
        head = next((ln for ln in lines if "function calls" in ln), "")
        print(head.strip())
        print("\n".join(lines[start:start + n + 1]))


def print_requests(backend, args, cases, lat, cpu, sql) -> None:
    print(f"\nbench_protected_cpu: {backend}, {args.patients} patients x {args.obs} Observations; {args.n} requests x {args.reps} reps per case "
          "and kind, in-process ASGI calls interleaved across cases; cpu = the serving thread's CPU time (these paths run on the "
          "event loop); machine shared (loaded): compare ratios within this run")
    print(f"{'kind':<8}{'case':<11}{'wall p50':>9}{'wall mean':>10}{'cpu p50':>9}{'cpu mean':>9}{'vs open (cpu p50)':>19}{'(cpu mean)':>11}{'SQL/req':>9}")
    for kind in ("read", "search"):
        o50, omean = statistics.median(cpu[("open", kind)]), statistics.mean(cpu[("open", kind)])
        for case in cases:
            xs, cs = lat[(case, kind)], cpu[(case, kind)]
            c50, cmean = statistics.median(cs), statistics.mean(cs)
            print(f"{kind:<8}{case:<11}{statistics.median(xs) * 1000:>9.3f}{statistics.mean(xs) * 1000:>10.3f}{c50 * 1000:>9.3f}{cmean * 1000:>9.3f}"
                  f"{o50 / c50:>19.2f}{omean / cmean:>11.2f}{sql[(case, kind)] / len(xs):>9.2f}")
    print("(ms per request; 'vs open' = open's CPU / this case's CPU, i.e. the throughput ratio if CPU bound)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="requests per case and kind per rep")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--patients", type=int, default=50)
    ap.add_argument("--obs", type=int, default=40)
    ap.add_argument("--events", type=int, default=2000, help="read events written to the log for the per-event figures")
    ap.add_argument("--event-kind", choices=["both", "read", "search"], default="both",
                    help="which events the per-event figures write (default: half reads, half searches)")
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the preload (objects alive then are never collected again)")
    ap.add_argument("--skip-requests", action="store_true", help="only the per-event figures (the events of 100 reads and searches)")
    args = ap.parse_args()

    os.environ["FHIR_SERVER_AUTH_SIGNING_KEY_FILE"] = _key()
    os.environ["FHIR_SERVER_AUTH_BASE_URL"] = AUDIENCE
    os.environ["FHIR_SERVER_TERMINOLOGY_LOAD"] = "false"
    os.environ["FHIR_SERVER_ACCESS_LOG"] = "off"
    import logging

    logging.disable(logging.WARNING)
    from fhir_server.auth.keys import load_pem
    from fhir_server.auth.tokens import issue_access_token
    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings

    tmp = Path(tempfile.mkdtemp(prefix="bench-protected-cpu-"))
    url = args.pg_url or f"sqlite:///{tmp / 'fhir.sqlite'}"
    if args.pg_url:
        from benchlib import recreate_pg_database

        recreate_pg_database(args.pg_url)
    common = dict(database_url=url, export_dir=str(tmp / "export"), blob_dir=str(tmp / "blobs"), run_background_jobs=False,
                  terminology_load=False, access_log="off")
    apps = {
        "protected": build_app(Settings(**common, audit="on", audit_writer="thread", audit_flush_seconds=3600)),
        "noaudit": None,
        "open": None,
    }
    db = apps["protected"].state.db
    apps["noaudit"] = build_app(Settings(**common, audit="off"), db=db)
    apps["open"] = build_app(Settings(**common, auth="off", audit="off"), db=db)
    writer = apps["protected"].state.audit_writer
    key = load_pem(os.environ["FHIR_SERVER_AUTH_SIGNING_KEY_FILE"])

    def token(scope: str, patient: str | None = None) -> str:
        return issue_access_token(key, AUDIENCE, AUDIENCE, scope, "bench", "bench", 36000, patient)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asgi = {name: Asgi(a) for name, a in apps.items()}
    for a in asgi.values():
        loop.run_until_complete(a.start())
    system = {"authorization": f"Bearer {token('system/*.*')}"}
    t0 = time.perf_counter()
    data = preload(asgi["noaudit"], loop, args.patients, args.obs, system)
    print(f"preloaded {args.patients} Patients x {args.obs} Observations in {time.perf_counter() - t0:.1f}s", flush=True)
    if args.pg_url:
        with db.engine.begin() as conn:
            from sqlalchemy import text

            conn.execute(text("ANALYZE"))
    pid = sorted(data)[len(data) // 2]
    other = next(p for p in data if p != pid)
    ptoken = {"authorization": f"Bearer {token('patient/*.rs', pid)}"}
    headers = {"open": {}, "noaudit": ptoken, "protected": ptoken}
    reads = [f"/fhir/Observation/{o}" for o in data[pid]]
    search = f"/fhir/Observation?patient={pid}&_count=10&_sort=-_lastUpdated"

    def req(case: str, target: str) -> tuple[int, bytes]:
        return loop.run_until_complete(asgi[case].request("GET", target, headers[case]))

    # sanity: the patient's token reaches its own record only
    assert req("protected", reads[0])[0] == 200
    assert req("protected", f"/fhir/Observation/{data[other][0]}")[0] == 404
    assert req("open", f"/fhir/Observation/{data[other][0]}")[0] == 200
    s1, b1 = req("protected", search)
    s2, b2 = req("open", search)
    assert s1 == s2 == 200 and b1.count(b'"fullUrl"') == b2.count(b'"fullUrl"') == 10, (s1, s2)

    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()
    if args.skip_requests:
        args.n, args.reps = max(args.events // 2 + 1, 100), 0
    counter = [0]
    count_statements(db, counter)  # the three apps share one Database
    for name in ("protected", "noaudit", "open"):
        count_reader(asgi[name], counter)

    cases = ("open", "noaudit", "protected")
    lat: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    sql: dict[tuple[str, str], int] = {}
    for rep in range(args.reps + 1):
        for kind in ("read", "search"):
            for i in range(args.n):  # the cases take turns request by request: the machine's noise falls on all alike
                target = reads[i % len(reads)] if kind == "read" else search
                for case in cases:
                    s0 = counter[0]
                    c, t = time.thread_time(), time.perf_counter()
                    req(case, target)
                    dt, dc = time.perf_counter() - t, time.thread_time() - c
                    if rep:  # the first round warms up
                        lat.setdefault((case, kind), []).append(dt)
                        cpu.setdefault((case, kind), []).append(dc)
                        sql[(case, kind)] = sql.get((case, kind), 0) + counter[0] - s0

    backend = "PostgreSQL" if args.pg_url else "SQLite"
    if args.reps:
        print_requests(backend, args, cases, lat, cpu, sql)
    else:
        print(f"\n{backend}: requests run only to queue events")

    # ---------------------------------------------------------------- per event
    queued = list(writer._queue)
    print(f"\nqueued AuditEvents from the runs: {len(queued)}")
    from fhir_server.audit.writer import AuditWriter

    from fhir_server.audit.log import decode_row

    reads_q = [p for p in queued if decode_row(p)[0]["subtype"] == "read"]
    searches_q = [p for p in queued if decode_row(p)[0]["subtype"] == "search-type"]
    if args.event_kind == "read":
        sample = reads_q[: args.events]
    elif args.event_kind == "search":
        sample = searches_q[: args.events]
    else:
        sample = reads_q[: args.events // 2] + searches_q[: args.events // 2]
    writer._queue.clear()
    t = time.perf_counter()
    blob = pickle.dumps(("events", sample), protocol=pickle.HIGHEST_PROTOCOL)
    t_pickle = time.perf_counter() - t
    w = AuditWriter(db, flush_seconds=3600)
    w._queue.extend(sample)
    prof = cProfile.Profile() if args.profile else None
    gclock = GcClock()
    c0, t = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    n_written = w.flush()
    if prof:
        prof.disable()
    t_write, c_write = time.perf_counter() - t, time.process_time() - c0
    gc_write = gclock.total()
    print(f"per event over {len(sample)} (half reads, half searches; {len(blob) / max(1, len(sample)):.0f} pickled bytes each):")
    print(f"  pickle (process writer's sender)  {len(sample) / max(t_pickle, 1e-9):>9.0f} events/s  {t_pickle / max(1, len(sample)) * 1e6:>7.1f} us/event")
    print(f"  write (facts -> the log's rows)   {n_written / t_write:>9.0f} events/s  {t_write / n_written * 1e6:>7.1f} us/event (cpu {c_write / n_written * 1e6:.1f}, of which in the garbage collector "
          f"{gc_write / n_written * 1e6:.1f}: generations 0/1/2 {'/'.join(f'{x / n_written * 1e6:.0f}' for x in gclock.spent)} us in "
          f"{'/'.join(map(str, gclock.runs))} runs)")
    if prof:
        top(prof, "write", args.top)
        for kind in ("read", "search"):
            p = cProfile.Profile()
            p.enable()
            for i in range(args.n):
                req("protected", reads[i % len(reads)] if kind == "read" else search)
            p.disable()
            top(p, f"protected {kind} x {args.n}", args.top)
            if kind == "read":  # where a protected read's extra time goes: own time per function, protected minus open
                stats = {}
                for case in ("open", "protected"):
                    q = cProfile.Profile()
                    q.enable()
                    for i in range(args.n):
                        req(case, reads[i % len(reads)])
                    q.disable()
                    stats[case] = pstats.Stats(q).stats
                rows = []
                for fn, (_cc, nc, tt, _ct, _callers) in stats["protected"].items():
                    o = stats["open"].get(fn)
                    rows.append((tt - (o[2] if o else 0.0), nc - (o[1] if o else 0), fn))
                rows.sort(reverse=True)
                print(f"\n-- protected read minus open read, own time per request (us; cProfile inflates small functions) --")
                for d, nc, (file, line, name) in rows[: args.top]:
                    print(f"{d / args.n * 1e6:8.2f} {nc / args.n:6.1f} calls  {Path(file).name}:{line}({name})")
        writer._queue.clear()
    for a in asgi.values():
        loop.run_until_complete(a.stop())
    loop.close()


if __name__ == "__main__":
    main()
