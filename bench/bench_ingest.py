"""Transaction ingest of the Synthea bundles, in resources/s, on SQLite and PostgreSQL.

Loads ../shared/data/synthea-r4 (100 patient bundles plus the shared hospital and
practitioner bundles) with `fhir_server.loader` - the same transaction code as
`POST /fhir` - into a fresh database, with 1 and 2 worker processes, and prints
resources/s. For scale it also times a raw multi-row INSERT of the same bytes
into the resources table (no validation, no index), the ceiling of the database.

    .venv/bin/python bench/bench_ingest.py
    .venv/bin/python bench/bench_ingest.py --pg-url postgresql+psycopg://postgres@127.0.0.1:55433/fhir_bench

The PostgreSQL database in --pg-url is dropped and recreated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchlib import recreate_pg_database

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea-r4"


def fresh_database(url: str | None, tmp: Path, tag: str) -> str:
    """A new SQLite file under tmp, or the PostgreSQL database in url dropped and recreated."""
    if url is None:
        return f"sqlite:///{tmp / f'ingest-{tag}.sqlite'}"
    recreate_pg_database(url)
    return url


def ingest(url: str, workers: int) -> tuple[int, float]:
    from fhir_server.config import Settings
    from fhir_server.loader import load_paths
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade

    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    settings = Settings(database_url=url, run_background_jobs=False)
    start = time.perf_counter()
    results = load_paths(settings, [str(SYNTHEA)], workers=workers)
    elapsed = time.perf_counter() - start
    failures = sum(len(r.failures) for r in results)
    if failures:
        raise SystemExit(f"{failures} failures while loading")
    return sum(r.resources for r in results), elapsed


def raw_insert(url: str) -> tuple[int, float]:
    """The same resource bytes inserted with no validation or indexing."""
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade
    from fhir_server.storage.schema import resources

    db = Database(url)
    upgrade(db.engine)
    rows = []
    now = datetime.now(timezone.utc)
    for f in sorted(SYNTHEA.glob("*.json")):
        for i, e in enumerate(json.loads(f.read_bytes())["entry"]):
            r = e["resource"]
            rows.append({"res_type": r["resourceType"], "res_id": f"{f.stem[-12:]}-{i}", "version_id": 1,
                         "last_updated": now, "deleted": False, "content": json.dumps(r).encode()})
    start = time.perf_counter()
    with db.write() as conn:
        for i in range(0, len(rows), 1000):
            conn.execute(resources.insert(), rows[i : i + 1000])
    elapsed = time.perf_counter() - start
    db.dispose()
    return len(rows), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg-url", help="PostgreSQL URL (dropped and recreated); SQLite only when absent")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    if not SYNTHEA.exists():
        raise SystemExit(f"no Synthea data at {SYNTHEA}")
    backends = [("sqlite", None)] + ([("postgres", args.pg_url)] if args.pg_url else [])
    print(f"{'backend':9} {'workers':>7} {'resources':>9} {'seconds':>8} {'res/s':>8}  vs raw insert")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name, url in backends:
            n_raw, t_raw = raw_insert(fresh_database(url, tmp, "raw"))
            raw_rate = n_raw / t_raw
            print(f"{name:9} {'raw':>7} {n_raw:9d} {t_raw:8.2f} {raw_rate:8.0f}")
            for workers in (int(w) for w in args.workers.split(",")):
                rates = []
                for rep in range(args.reps):
                    n, t = ingest(fresh_database(url, tmp, f"{workers}-{rep}"), workers)
                    rates.append(n / t)
                rate = statistics.median(rates)
                print(f"{name:9} {workers:7d} {n:9d} {n / rate:8.2f} {rate:8.0f}  {rate / raw_rate:6.3f}")


if __name__ == "__main__":
    main()
