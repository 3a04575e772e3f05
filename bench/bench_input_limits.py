"""What the input checks cost, and what the response limit saves.

1. The JSON guard (model/jsonguard.py) against the parse it follows, on Synthea
   patient bundles (the largest bodies the server sees): median milliseconds per
   body for `json.loads` (the preserving parse) and for `check_document`, and
   their ratio. Needs ../shared/data/synthea-r4 (skipped with a message if absent).
2. A 40-entry batch of GETs of one large stored Patient, answered in process,
   with the response limit at its default and at 64 MiB / 10: peak traced
   Python memory (tracemalloc) and response size.

Prints figures only; run: .venv/bin/python bench/bench_input_limits.py [--files 5] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea-r4"


def bench_guard(files: int, reps: int) -> None:
    from fhir_server.model import jsonguard, jsonio

    paths = sorted(SYNTHEA.glob("*.json"), key=lambda p: -p.stat().st_size)[:files] if SYNTHEA.exists() else []
    if not paths:
        print(f"guard: no Synthea bundles under {SYNTHEA}; skipped")
        return
    print(f"guard vs parse, {len(paths)} largest Synthea bundles, median of {reps}:")
    ratios = []
    for path in paths:
        raw = path.read_bytes()
        parse, guard = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            doc = json.loads(raw.decode("utf-8"), parse_float=jsonio.JsonDecimal)
            t1 = time.perf_counter()
            jsonguard.check_document(doc, raw)
            t2 = time.perf_counter()
            parse.append(t1 - t0)
            guard.append(t2 - t1)
        p, g = statistics.median(parse) * 1000, statistics.median(guard) * 1000
        ratios.append(g / p)
        print(f"  {path.name[:40]:40s} {len(raw) / 1e6:6.2f} MB  parse {p:7.1f} ms  guard {g:6.1f} ms  guard/parse {g / p:.2f}")
    print(f"  median guard/parse: {statistics.median(ratios):.2f}")


def bench_batch(entries: int, resource_kb: int) -> None:
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings
    from fhir_server.rest import limits

    with tempfile.TemporaryDirectory() as tmp:
        for limit in (64 * 1024 * 1024, 64 * 1024 * 1024 // 10):
            settings = Settings(database_url=f"sqlite:///{tmp}/b{limit}.sqlite", export_dir=tmp, run_background_jobs=False,
                                access_log="off", max_resource_bytes=resource_kb * 1024 + 4096, max_response_bytes=limit)
            app = build_app(settings)
            limits.configure(settings)
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from benchlib import bearer_headers

            with TestClient(app, headers=bearer_headers(settings, app.state.db)) as c:
                body = json.dumps({"resourceType": "Patient", "name": [{"family": "x" * resource_kb * 1024}]})
                pid = c.post("/fhir/Patient", content=body, headers={"Content-Type": "application/fhir+json"}).json()["id"]
                batch = json.dumps({"resourceType": "Bundle", "type": "batch",
                                    "entry": [{"request": {"method": "GET", "url": f"Patient/{pid}"}}] * entries})
                tracemalloc.start()
                r = c.post("/fhir", content=batch, headers={"Content-Type": "application/fhir+json"})
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                ok = sum(e["response"]["status"].startswith("200") for e in r.json()["entry"])
            app.state.db.dispose()
            print(f"batch of {entries} GETs of a {resource_kb} KB Patient, response limit {limit / 2**20:.1f} MiB: "
                  f"request {len(batch)} B, response {len(r.content) / 2**20:.1f} MiB, {ok} entries answered 200, "
                  f"peak traced memory {peak / 2**20:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--entries", type=int, default=40)
    ap.add_argument("--resource-kb", type=int, default=2048)
    a = ap.parse_args()
    bench_guard(a.files, a.reps)
    bench_batch(a.entries, a.resource_kb)


if __name__ == "__main__":
    main()
