#!/usr/bin/env python3
"""Booking: `Appointment/$find` latency over many Slots, and 50 clients booking
the same day's Slots at once (bookings per second, and zero double bookings).

1. Creates a fresh database (PostgreSQL: the --pg-url database is dropped and
   recreated; SQLite: a file under --work-dir) and loads --slots Slots over
   --schedules practitioners' Schedules (20-minute Slots, 08:00-16:00 UTC on
   every day from tomorrow). By default the Slots are bulk-written (COPY) into
   the resource tables and the `booking_slots` index that $find reads, without
   the generic search-index rows; --engine-load sends them through the server's
   transaction path instead (every index, every rule; ~100 Slots/s on a loaded
   2-core machine, so only for small counts).
2. Starts `fhir-server serve` (background jobs off) and times --requests
   sequential `$find` calls (one practitioner, one day; and a specialty over one
   day with no practitioner), after --warmup calls: p50 / p90 / p99.
3. --clients threads each repeatedly ask `$find` for the same day and `$book`
   the first proposal, until the day is full; reports bookings/s, the 409s
   (lost races), and checks in the database that no Slot has two active
   Appointments and that every booked Slot is `busy`.

    .venv/bin/python bench/bench_booking.py --db postgres --slots 1000000 \
        --pg-url postgresql+psycopg://postgres@127.0.0.1:55432/fhir_issue15_bench

It prints figures; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from benchlib import free_port, recreate_pg_database, server_bearer_headers, stop_group  # noqa: E402

SLOT_MINUTES = 20
PER_DAY = 8 * 60 // SLOT_MINUTES  # 24 Slots a day per Schedule
SPECIALTY = "http://snomed.info/sct|394814009"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def _slot(practs: list[str], day0: datetime, k: int) -> tuple[str, dict, datetime]:
    n_schedules = len(practs)
    sched = k % n_schedules
    day, idx = divmod(k // n_schedules, PER_DAY)
    start = day0 + timedelta(days=day, minutes=SLOT_MINUTES * idx)
    return f"s-{practs[sched]}", {
        "resourceType": "Slot", "schedule": {"reference": f"Schedule/s-{practs[sched]}"}, "status": "free",
        "start": iso(start), "end": iso(start + timedelta(minutes=SLOT_MINUTES)),
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}],
        "serviceType": [{"coding": [{"system": "http://example.org/service", "code": "gp-visit"}]}]}, start


def _engine_slots(db, settings, ctx, practs, day0, n_slots, batch) -> None:
    """Every Slot through process_transaction: indexed and checked as a client's write."""
    from fhir_server.rest.bundles import process_transaction

    entries = []
    for k in range(n_slots):
        entries.append({"resource": _slot(practs, day0, k)[1], "request": {"method": "POST", "url": "Slot"}})
        if len(entries) == batch or k == n_slots - 1:
            with db.write() as conn:
                process_transaction(conn, ctx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, settings)
            entries = []


def _bulk_slots(db, practs, day0, n_slots, log) -> None:
    """Slots written straight into resources, resource_versions and booking_slots (COPY on
    PostgreSQL): what $find and $book read. The generic search-index rows of these Slots are
    NOT written (`Slot?...` searches will not find them); --engine-load writes everything."""
    import orjson
    from sqlalchemy import text

    from fhir_server.storage.schema import booking_slots, resource_versions, resources
    from fhir_server.workflows.booking.slot_index import row_for

    now = datetime.now(timezone.utc)
    with db.engine.begin() as conn:
        base_pk = (conn.execute(text("SELECT COALESCE(MAX(pk), 0) FROM resources")).scalar() or 0) + 1
    chunk = 50_000
    for lo in range(0, n_slots, chunk):
        res_rows, ver_rows, idx_rows = [], [], []
        for k in range(lo, min(lo + chunk, n_slots)):
            _sched, slot, _start = _slot(practs, day0, k)
            sid = f"slot-{k}"
            slot = {"resourceType": "Slot", "id": sid, "meta": {"versionId": "1", "lastUpdated": iso(now)}, **{
                key: v for key, v in slot.items() if key != "resourceType"}}
            content = orjson.dumps(slot)
            pk = base_pk + k
            res_rows.append((pk, "Slot", sid, 1, now, False, content))
            ver_rows.append((pk, "Slot", sid, 1, now, "POST", False, content))
            r = row_for(sid, slot)
            idx_rows.append((r["slot_id"], r["schedule_id"], r["start"], r["status"], r["codes"]))
        with db.engine.begin() as conn:
            if db.dialect == "postgresql":
                raw = conn.connection.dbapi_connection
                with raw.cursor() as cur:
                    for table, cols, rows in (
                        ("resources", "pk, res_type, res_id, version_id, last_updated, deleted, content", res_rows),
                        ("resource_versions", "res_pk, res_type, res_id, version_id, last_updated, method, deleted, content", ver_rows),
                        ("booking_slots", "slot_id, schedule_id, start, status, codes", idx_rows),
                    ):
                        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row(row)
            else:
                conn.execute(resources.insert(), [dict(zip(("pk", "res_type", "res_id", "version_id", "last_updated", "deleted", "content"), r)) for r in res_rows])
                conn.execute(resource_versions.insert(), [dict(zip(("res_pk", "res_type", "res_id", "version_id", "last_updated", "method", "deleted", "content"), r)) for r in ver_rows])
                conn.execute(booking_slots.insert(), [dict(zip(("slot_id", "schedule_id", "start", "status", "codes"), r)) for r in idx_rows])
        log(f"  bulk-loaded {min(lo + chunk, n_slots):,} Slots")
    if db.dialect == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('resources', 'pk'), (SELECT MAX(pk) FROM resources))"))


def load(db_url: str, n_slots: int, n_schedules: int, batch: int = 1000, fast: bool = True) -> tuple[list[str], datetime]:
    """Practitioners and Schedules through process_transaction, then the Slots (bulk, or
    through the engine); returns practitioner ids and day 0."""
    from fhir_server.bootstrap import install_plugins
    from fhir_server.config import Settings
    from fhir_server.rest.bundles import process_transaction
    from fhir_server.rest.context import RequestContext
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade

    settings = Settings(database_url=db_url, run_background_jobs=False)
    db = Database(db_url)
    upgrade(db.engine)
    install_plugins(settings)
    ctx = RequestContext(base_url="")
    day0 = (datetime.now(timezone.utc) + timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
    practs = [str(uuid.uuid4()) for _ in range(n_schedules)]
    entries = []
    for i, pid in enumerate(practs):
        entries.append({"resource": {"resourceType": "Practitioner", "id": pid, "name": [{"family": f"Lekare{i}"}]},
                        "request": {"method": "PUT", "url": f"Practitioner/{pid}"}})
        entries.append({"resource": {"resourceType": "Schedule", "id": f"s-{pid}", "actor": [{"reference": f"Practitioner/{pid}"}],
                                     "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}]},
                        "request": {"method": "PUT", "url": f"Schedule/s-{pid}"}})
    with db.write() as conn:
        process_transaction(conn, ctx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, settings)
    started = time.perf_counter()
    if fast:
        _bulk_slots(db, practs, day0, n_slots, log)
    else:
        _engine_slots(db, settings, ctx, practs, day0, n_slots, batch)
    log(f"  {n_slots:,} Slots in {time.perf_counter() - started:,.0f} s")
    if db.dialect == "postgresql":
        with db.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    db.dispose()
    return practs, day0


class Server:
    def __init__(self, db_url: str, work: Path, workers: int):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.log_path = work / "server.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, FHIR_SERVER_RUN_BACKGROUND_JOBS="false")
        exe = Path(sys.executable).with_name("fhir-server")
        argv = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--database-url", db_url,
                "--workers", str(workers), "--log-level", "warning"]
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(self.log_path.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(self.base + "/metadata", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        stop_group(self.popen)
        self._log.close()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def time_find(base: str, practs: list[str], day0: datetime, days: int, requests: int, warmup: int, headers: dict) -> dict:
    import random

    import httpx

    rnd = random.Random(7)
    out = {}
    with httpx.Client(timeout=60, headers=headers) as client:
        for kind in ("practitioner-day", "specialty-day", "baseline: Slot read"):
            times = []
            for i in range(warmup + requests):
                if kind.startswith("baseline"):
                    # the same server path (HTTP, middleware, token check) for a one-row read:
                    # what a $find costs beyond it is the operation's own work
                    t = time.perf_counter()
                    r = client.get(f"{base}/Slot/slot-{rnd.randrange(max(days, 1) * PER_DAY * len(practs))}")
                    dt = (time.perf_counter() - t) * 1000
                    if r.status_code != 200:
                        raise RuntimeError(f"Slot read failed: {r.status_code} {r.text[:300]}")
                    if i >= warmup:
                        times.append(dt)
                    continue
                d = day0 + timedelta(days=rnd.randrange(max(days, 1)))
                q = {"start": iso(d.replace(hour=0)), "end": iso(d.replace(hour=23)), "_count": "10"}
                if kind == "practitioner-day":
                    q["practitioner"] = f"Practitioner/{rnd.choice(practs)}"
                else:
                    q["specialty"] = SPECIALTY
                t = time.perf_counter()
                r = client.get(f"{base}/Appointment/$find", params=q)
                dt = (time.perf_counter() - t) * 1000
                if r.status_code != 200 or not r.json().get("entry"):
                    raise RuntimeError(f"$find failed or empty: {r.status_code} {r.text[:300]}")
                if i >= warmup:
                    times.append(dt)
            out[kind] = {"p50": statistics.median(times), "p90": pct(times, 90), "p99": pct(times, 99), "n": len(times)}
    return out


def race(base: str, practs: list[str], day: datetime, clients: int, n_practs: int, headers: dict) -> dict:
    import httpx

    patient = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "name": [{"family": "Bench"}]}, headers=headers).json()["id"]
    chosen = practs[:n_practs]
    counts = {"booked": 0, "conflict": 0, "other": 0}
    lock = threading.Lock()
    stop = threading.Event()
    barrier = threading.Barrier(clients)

    def worker(i: int):
        with httpx.Client(timeout=60, headers=headers) as c:
            barrier.wait()
            misses = 0
            while not stop.is_set():
                q = {"start": iso(day.replace(hour=0)), "end": iso(day.replace(hour=23)), "_count": "3",
                     "practitioner": f"Practitioner/{chosen[i % len(chosen)]}", "patient": f"Patient/{patient}"}
                found = c.get(f"{base}/Appointment/$find", params=q).json().get("entry") or []
                if not found:
                    misses += 1
                    if misses > 3:
                        return
                    continue
                appt = found[0]["resource"]
                r = c.post(f"{base}/Appointment/$book", json={"resourceType": "Parameters", "parameter": [
                    {"name": "appt-resource", "resource": appt}]})
                with lock:
                    key = "booked" if r.status_code == 200 else "conflict" if r.status_code == 409 else "other"
                    counts[key] += 1
                    if key == "other" and counts["other"] < 3:
                        log(f"  unexpected {r.status_code}: {r.text[:300]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {**counts, "seconds": elapsed, "bookings_per_s": counts["booked"] / elapsed, "slots": n_practs * PER_DAY}


def verify(db_url: str) -> dict:
    """Active Appointments per Slot (from the stored resources) and busy-ness of booked Slots."""
    import orjson
    from sqlalchemy import select

    from fhir_server.storage.database import Database
    from fhir_server.storage.schema import resources

    db = Database(db_url)
    per_slot: dict[str, int] = {}
    with db.read() as conn:
        for (content,) in conn.execute(select(resources.c.content).where(resources.c.res_type == "Appointment", resources.c.deleted.is_(False))):
            a = orjson.loads(content)
            if a.get("status") in ("proposed", "pending", "booked", "arrived", "checked-in"):
                for s in a.get("slot") or []:
                    per_slot[s["reference"]] = per_slot.get(s["reference"], 0) + 1
        not_busy = 0
        for ref in per_slot:
            row = conn.execute(select(resources.c.content).where(resources.c.res_type == "Slot", resources.c.res_id == ref.split("/")[1])).first()
            if orjson.loads(row[0]).get("status") != "busy":
                not_busy += 1
    db.dispose()
    return {"booked_slots": len(per_slot), "double_booked": sum(1 for v in per_slot.values() if v > 1), "booked_but_not_busy": not_busy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    ap.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:55432/fhir_issue15_bench")
    ap.add_argument("--work-dir", default="/tmp/bench_booking")
    ap.add_argument("--slots", type=int, default=1_000_000)
    ap.add_argument("--schedules", type=int, default=200)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--race-practitioners", type=int, default=10, help="how many practitioners' day the clients fight over")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes")
    ap.add_argument("--reuse", action="store_true", help="keep the loaded database (skip loading)")
    ap.add_argument("--engine-load", action="store_true", help="load Slots through the server's transaction path (slow) instead of bulk")
    args = ap.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.db == "postgres":
        db_url = args.pg_url
        if not args.reuse:
            recreate_pg_database(db_url)
    else:
        path = work / "booking.sqlite"
        if not args.reuse:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        db_url = f"sqlite:///{path}"
    meta = work / f"meta-{args.db}.txt"
    t0 = time.perf_counter()
    if args.reuse and meta.exists():
        lines = meta.read_text().split("\n")
        day0 = datetime.fromisoformat(lines[0])
        practs = lines[1].split(",")
    else:
        log(f"loading {args.slots:,} Slots over {args.schedules} Schedules ({args.db}) ...")
        practs, day0 = load(db_url, args.slots, args.schedules, fast=not args.engine_load)
        meta.write_text(day0.isoformat() + "\n" + ",".join(practs))
    load_s = time.perf_counter() - t0
    days = args.slots // (args.schedules * PER_DAY)
    server = Server(db_url, work, args.workers)
    try:
        server.wait_ready()
        headers = server_bearer_headers(db_url, server.base)
        finds = time_find(server.base, practs, day0, days, args.requests, args.warmup, headers)
        race_day = day0 + timedelta(days=max(days - 1, 0))
        result = race(server.base, practs, race_day, args.clients, min(args.race_practitioners, len(practs)), headers)
    finally:
        server.stop()
    check = verify(db_url) if args.slots <= 2_000_000 else {}
    print(f"\nbooking benchmark ({args.db}, {args.slots:,} Slots, {args.schedules} Schedules, {days} days, "
          f"server workers {args.workers}; load {load_s:,.0f} s)")
    for kind, f in finds.items():
        print(f"  {kind:24s} p50 {f['p50']:6.1f} ms  p90 {f['p90']:6.1f} ms  p99 {f['p99']:6.1f} ms  (n={f['n']})")
    print(f"  race: {args.clients} clients over {result['slots']} Slots of one day: {result['booked']} booked, "
          f"{result['conflict']} x 409, {result['other']} other, {result['seconds']:.1f} s, "
          f"{result['bookings_per_s']:.1f} bookings/s")
    if check:
        print(f"  check: {check['booked_slots']} Slots with an active Appointment, {check['double_booked']} double-booked, "
              f"{check['booked_but_not_busy']} booked but not busy")


if __name__ == "__main__":
    main()
