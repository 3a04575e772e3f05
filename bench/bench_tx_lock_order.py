"""Concurrent transaction Bundles writing the same Patients in opposite orders (PostgreSQL).

Half of each round's transactions PUT Patients A then B, the other half B then A.
Without a canonical lock order PostgreSQL aborts one transaction of each crossing
pair (DeadlockDetected); bundles.py sorts its targets before locking and retries a
transient failure a bounded number of times. This prints, for the shipped code and
for the same code with the canonical lock order switched off, the HTTP statuses,
how many attempts were retried, and the median round time.

    FHIR_SERVER_BENCH_PG=postgresql+psycopg://postgres@127.0.0.1:55432/fhir_issue11_bench \
        .venv/bin/python bench/bench_tx_lock_order.py --rounds 5 --concurrency 20
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import bearer_headers, free_port, recreate_pg_database  # noqa: E402


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


def _serve(url: str):
    import uvicorn

    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings

    settings = Settings(database_url=url, run_background_jobs=False, export_dir="/tmp/bench-tx-export")
    app = build_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}/fhir"
    return server, base, bearer_headers(settings, app.state.db, base)


def _round(base: str, headers: dict[str, str], concurrency: int) -> tuple[list[int], float]:
    a, b = f"lo-a-{uuid.uuid4().hex[:6]}", f"lo-b-{uuid.uuid4().hex[:6]}"
    statuses: list[int] = []
    lock = threading.Lock()

    def put(pid: str) -> dict:
        return {"resource": {"resourceType": "Patient", "id": pid, "gender": "other"}, "request": {"method": "PUT", "url": f"Patient/{pid}"}}

    def one(n: int) -> None:
        order = (a, b) if n % 2 == 0 else (b, a)
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [put(order[0]), put(order[1])]}
        with httpx.Client(timeout=300, headers=headers) as c:
            code = c.post(base, json=bundle).status_code
        with lock:
            statuses.append(code)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=20)
    args = ap.parse_args()
    url = os.environ.get("FHIR_SERVER_BENCH_PG")
    if not url or not url.startswith("postgresql"):
        raise SystemExit("set FHIR_SERVER_BENCH_PG to a PostgreSQL URL naming a throw-away database")
    recreate_pg_database(url)
    from fhir_server.rest import bundle_targets

    counter = _Count()
    log = logging.getLogger("fhir_server.rest.retry")
    log.setLevel(logging.DEBUG)
    log.addHandler(counter)
    server, base, headers = _serve(url)
    shipped = bundle_targets.lock_targets
    try:
        for label, lock_fn in (("canonical lock order", shipped), ("lock order switched off", lambda conn, plan: None)):
            bundle_targets.lock_targets = lock_fn
            counter.n = 0
            codes: Counter = Counter()
            times = []
            for _ in range(args.rounds):
                statuses, secs = _round(base, headers, args.concurrency)
                codes.update(statuses)
                times.append(secs)
            total = args.rounds * args.concurrency
            print(f"{label:26s} {total} transactions: statuses {dict(sorted(codes.items()))}, "
                  f"retried attempts {counter.n}, median round {statistics.median(times):.2f} s")
    finally:
        bundle_targets.lock_targets = shipped
        server.should_exit = True
    print("(2-core machine shared with other engineers: times are noisy; compare the two lines of one run)")


if __name__ == "__main__":
    main()
