#!/usr/bin/env python3
"""Where a `$find` (one practitioner, one day) spends its time, without HTTP: the
Schedule lookup, the free-Slot range scan, parsing + the Schedules' rules, building
proposals, serialising; and a `SELECT 1` round trip to calibrate. Reads a database
loaded by bench_booking.py (its meta file gives day 0 and the practitioners).

    .venv/bin/python bench/bench_booking_split.py postgresql+psycopg://postgres@127.0.0.1:55432/fhir_issue15_bench \
        /tmp/bench_booking/meta-postgres.txt

It prints median milliseconds per step; it asserts nothing.
"""
import sys, time, statistics, random
from datetime import datetime, timedelta
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fhir_server.bootstrap import install_plugins
from fhir_server.config import Settings
from fhir_server.storage.database import Database
from fhir_server.operations import appointment_find as af
from fhir_server.model import jsonio
from fhir_server.workflows.booking.proposals import proposal
url = sys.argv[1]; meta = sys.argv[2]
lines = open(meta).read().split("\n"); day0 = datetime.fromisoformat(lines[0]); practs = lines[1].split(",")
settings = Settings(database_url=url, run_background_jobs=False); install_plugins(settings)
db = Database(url); rnd = random.Random(3)
T = {k: [] for k in ("schedules", "free_slots", "parse+read_schedules", "proposals", "dumps", "total")}
for i in range(80):
    d = day0 + timedelta(days=rnd.randrange(200)); s, e = d.replace(hour=0), d.replace(hour=23)
    t0 = time.perf_counter()
    with db.read() as conn:
        sch = af._schedules(conn, [f"Practitioner/{rnd.choice(practs)}"]); t1 = time.perf_counter()
        rows = af._free_slots(conn, s, e, sch, [], None, 20); t2 = time.perf_counter()
        slots = [jsonio.parse_plain(c) for _i, c, _a in rows]; cache = {}
        af._read_schedules(conn, settings, slots, cache); t3 = time.perf_counter()
    props = [proposal(sl, cache[sl["schedule"]["reference"][9:]][0], None) for sl in slots[:10]]; t4 = time.perf_counter()
    jsonio.dumps({"resourceType": "Bundle", "entry": [{"resource": p} for p in props]}); t5 = time.perf_counter()
    if i >= 10:
        for k, v in zip(T, (t1-t0, t2-t1, t3-t2, t4-t3, t5-t4, t5-t0)): T[k].append(v*1000)
for k, v in T.items(): print(f"  {k:22s} median {statistics.median(v):6.2f} ms")
from sqlalchemy import text
ts = []
with db.read() as conn:
    for i in range(60):
        t = time.perf_counter(); conn.execute(text("SELECT 1")).scalar(); ts.append((time.perf_counter()-t)*1000)
print(f"  SELECT 1 round trip   median {statistics.median(ts[10:]):6.2f} ms")
ts = []
for i in range(60):
    t = time.perf_counter()
    with db.read() as conn:
        conn.execute(text("SELECT 1")).scalar()
    ts.append((time.perf_counter()-t)*1000)
print(f"  checkout+SELECT 1     median {statistics.median(ts[10:]):6.2f} ms")
