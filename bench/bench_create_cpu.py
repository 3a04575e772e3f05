"""Per-create CPU of POST /fhir/Patient, measured in-process (no HTTP server, no load generator).

Builds the app as `fhir-server serve` does (protection and the access log on, a system/*.*
token on every request), then drives N creates of bench_rest's create body (a Patient with
an identifier, name, gender, birthDate, address) straight through the ASGI interface, one
at a time, and prints:

- wall and process-CPU milliseconds per create (median of --reps blocks, and the mean),
- SQL statements (cursor executions) per create, by first word,
- with --profile, cProfile's top functions by own and cumulative time over one block.

One request at a time, so the CPU per create is what the server spends, not what queueing
under concurrency adds. The CPU of this process includes the database driver's client side
(and SQLite's engine, which runs in-process); PostgreSQL's own CPU is not counted.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_create_cpu.py -n 2000
    PYTHONPATH=$PWD .venv/bin/python bench/bench_create_cpu.py -n 2000 \
        --pg-url postgresql+psycopg://postgres@127.0.0.1:55433/fhir_create_bench

The PostgreSQL database in --pg-url is dropped and recreated. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import io
import logging
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("FHIR_SERVER_TERMINOLOGY_LOAD", "false")


def create_body(run: str, n: int) -> bytes:
    """bench_rest's wrk create body (rest_common.WRK_CREATE_LUA), numbered n."""
    families = ("Nowak", "Hansen", "Johansson", "Virtanen", "Jensen", "Berg")
    return (
        '{"resourceType":"Patient","identifier":[{"system":"urn:bench","value":"%s-%d-%d"}],'
        '"active":true,"name":[{"family":"%s","given":["W%d","N%d"]}],"gender":"%s",'
        '"birthDate":"19%02d-%02d-%02d","address":[{"city":"Bench","country":"PL"}]}'
        % (run, 1, n, families[(n + 1) % len(families)], 1, n, "female" if n % 2 == 0 else "male",
           n % 100, n % 12 + 1, n % 28 + 1)
    ).encode()


class AsgiDriver:
    """Sends one request at a time to an ASGI app, with the least client-side work."""

    def __init__(self, app, headers: dict[str, str]):
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.loop = asyncio.new_event_loop()

    def post(self, path: str, body: bytes) -> int:
        return self.post_many(path, [body])[0]

    def post_many(self, path: str, bodies) -> list[int]:
        """POST each body in turn, all in one task: anyio keeps its worker threads for the
        life of the event loop's root task, so one task per request would start a thread each."""
        async def run():
            return [await self._post(path, b) for b in bodies]

        return self.loop.run_until_complete(run())

    async def _post(self, path: str, body: bytes) -> int:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": self.headers + [(b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
        }
        sent = False
        status = 0

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status

    def lifespan(self, kind: str) -> None:
        async def run():
            q: asyncio.Queue = asyncio.Queue()
            await q.put({"type": f"lifespan.{kind}"})
            done = asyncio.Event()

            async def receive():
                if done.is_set():
                    await asyncio.sleep(3600)
                return await q.get()

            async def send(message):
                done.set()

            task = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
            await done.wait()
            return task

        self._lifespan_task = self.loop.run_until_complete(run())


def measure(db_url: str, n: int, reps: int, profile: bool, top: int) -> None:
    from sqlalchemy import event

    from benchlib import bearer_headers
    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings
    from fhir_server.storage.database import Database

    work = Path(tempfile.mkdtemp(prefix="bench-create-cpu-"))
    # the access log's lines go to a file, as a served process's stderr does in bench_rest
    access = logging.getLogger("fhir_server.access")
    if not access.handlers:
        access.addHandler(logging.FileHandler(work / "access.log"))
        access.propagate = False
        access.setLevel(logging.INFO)
    settings = Settings(database_url=db_url, export_dir=str(work / "export"), blob_dir=str(work / "blobs"),
                        run_background_jobs=False, terminology_load=False, audit_writer="thread")
    db = Database(db_url)
    sqlite_runs = collections.Counter()  # statements SQLite itself runs (executemany: once per row)
    counting = [False]
    if db.dialect == "sqlite":
        def trace(conn_record, _record):
            conn_record.set_trace_callback(lambda sql: counting[0] and sqlite_runs.update((sql.lstrip().split(None, 1)[0].upper(),)))

        for engine in (db.engine, db._autocommit):
            event.listen(engine, "connect", trace)
    app = build_app(settings, db)
    headers = {"content-type": "application/fhir+json", "accept": "application/fhir+json",
               **bearer_headers(settings, db)}
    driver = AsgiDriver(app, headers)

    statements: collections.Counter = collections.Counter()

    def count(conn, cursor, statement, parameters, context, executemany):
        if counting[0]:
            statements[statement.lstrip().split(None, 1)[0].upper()] += 1

    for engine in (db.engine, db._autocommit):
        event.listen(engine, "before_cursor_execute", count)
    raw_counts = collections.Counter()  # statements sent past SQLAlchemy (repository's RawCursor flush)
    _patch_raw_cursor(raw_counts, counting)
    waits = collections.Counter()
    _count_driver_waits(waits, counting)

    seq = iter(range(10**9))
    # warm-up: imports, compiled caches, connection pool
    bad = [s for s in driver.post_many("/fhir/Patient", [create_body("w", next(seq)) for _ in range(200)]) if s != 201]
    if bad:
        raise SystemExit(f"warm-up creates answered {bad[:5]}")

    wall, cpu, user, system, pg = [], [], [], [], []
    postmaster = _postmaster_pid(db)
    block = max(1, n // reps)
    for _ in range(reps):
        bodies = [create_body("m", next(seq)) for _ in range(block)]
        counting[0] = True
        w0, c0, t0, p0 = time.perf_counter(), time.process_time(), os.times(), postgres_cpu_seconds(postmaster)
        bad = [s for s in driver.post_many("/fhir/Patient", bodies) if s != 201]
        if bad:
            raise SystemExit(f"creates answered {bad[:5]}")
        wall.append((time.perf_counter() - w0) / block * 1e3)
        cpu.append((time.process_time() - c0) / block * 1e3)
        t1 = os.times()
        pg.append((postgres_cpu_seconds(postmaster) - p0) / block * 1e3)
        user.append((t1.user - t0.user) / block * 1e3)
        system.append((t1.system - t0.system) / block * 1e3)
        counting[0] = False
    total = block * reps
    print(f"{db.dialect}: {total} creates in {reps} blocks of {block}")
    print(f"  wall ms/create: median {statistics.median(wall):.3f}  mean {statistics.mean(wall):.3f}  min {min(wall):.3f}")
    print(f"  CPU  ms/create: median {statistics.median(cpu):.3f}  mean {statistics.mean(cpu):.3f}  min {min(cpu):.3f}"
          f"  (user {statistics.median(user):.3f}, system {statistics.median(system):.3f})")
    if postmaster:
        print(f"  PostgreSQL server CPU ms/create: median {statistics.median(pg):.3f}  min {min(pg):.3f}")
    all_counts = statements + raw_counts
    per = {k: v / total for k, v in sorted(all_counts.items())}
    print(f"  SQL statements through SQLAlchemy (and raw: psycopg's RawCursor)/create: {sum(all_counts.values()) / total:.2f}  "
          + "  ".join(f"{k} {v:.2f}" for k, v in per.items()))
    if sqlite_runs:
        print(f"  SQLite statement runs/create (each row of an executemany counts): {sum(sqlite_runs.values()) / total:.2f}  "
              + "  ".join(f"{k} {v / total:.2f}" for k, v in sorted(sqlite_runs.items())))
    if waits:
        print(f"  PostgreSQL round trips/create (psycopg waits for the server): {waits['wait'] / total:.2f}")

    if profile:
        # cProfile sees one thread: the work handed to worker threads runs inline meanwhile
        import anyio.to_thread

        original = anyio.to_thread.run_sync

        async def inline(func, *args, **kw):
            return func(*args)

        anyio.to_thread.run_sync = inline
        bodies = [create_body("p", next(seq)) for _ in range(block)]
        prof = cProfile.Profile(time.thread_time)  # CPU time: waits for the database do not count
        prof.enable()
        driver.post_many("/fhir/Patient", bodies)
        prof.disable()
        anyio.to_thread.run_sync = original
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(key).print_stats(top)
            print(f"\n  cProfile over {block} creates, by {key}:")
            print("\n".join("    " + line for line in out.getvalue().splitlines() if line.strip())[:12000])
    db.dispose()


def _postmaster_pid(db) -> int | None:
    """The PostgreSQL server process serving `db` (its backends are its children), if on this machine."""
    if db.dialect != "postgresql":
        return None
    from sqlalchemy import text

    with db.engine.connect() as conn:
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    try:
        return int(open(f"/proc/{backend}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def postgres_cpu_seconds(postmaster: int | None) -> float:
    """CPU (user + system) of the PostgreSQL server `postmaster` and all its processes, from /proc."""
    if postmaster is None:
        return 0.0
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == postmaster or int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _count_driver_waits(counter: collections.Counter, counting: list) -> None:
    """Count psycopg's waits for the server: each is one network round trip (a pipeline's one sync included)."""
    import psycopg

    original = psycopg.Connection.wait

    def wait(self, gen, *args, **kw):
        if counting[0]:
            counter["wait"] += 1
        return original(self, gen, *args, **kw)

    psycopg.Connection.wait = wait


def _patch_raw_cursor(counter: collections.Counter, counting: list) -> None:
    """Count the statements repository.flush sends through psycopg's RawCursor (SQLAlchemy sees none)."""
    from fhir_server.storage import repository

    original = repository.RawCursor

    class Counted(original):  # type: ignore[misc, valid-type]
        def execute(self, query, params=None, **kw):
            if counting[0]:
                counter[str(query).lstrip().split(None, 1)[0].upper() + "(raw)"] += 1
            return super().execute(query, params, **kw)

    repository.RawCursor = Counted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="measured creates (after 200 warm-up ones)")
    ap.add_argument("--reps", type=int, default=5, help="blocks the creates are split into (medians over blocks)")
    ap.add_argument("--pg-url", help="PostgreSQL database to DROP, recreate and measure (else SQLite only)")
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    ap.add_argument("--profile", action="store_true", help="also print cProfile's top functions")
    ap.add_argument("--top", type=int, default=35)
    args = ap.parse_args()
    if not args.no_sqlite:
        path = Path(tempfile.mkdtemp(prefix="bench-create-cpu-db-")) / "fhir.sqlite"
        measure(f"sqlite:///{path}", args.n, args.reps, args.profile, args.top)
    if args.pg_url:
        from benchlib import recreate_pg_database

        recreate_pg_database(args.pg_url)
        measure(args.pg_url, args.n, args.reps, args.profile, args.top)


if __name__ == "__main__":
    main()
