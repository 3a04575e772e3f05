"""Terminology benchmarks (printed figures, never assertions).

1. What the required/extensible/preferred binding checks add to a Synthea
   ingest: the same Synthea transaction bundles loaded in-process (the
   `fhir-server load` path: validation, rules, indexing, SQLite commit) into a
   fresh database with the binding tables compiled in, and with them emptied.
   Runs alternate (on, off, on, off, ...) and the medians are compared. The
   validation step alone (walk + bindings + model over every Synthea resource)
   is timed the same way.
2. ``ValueSet/$expand`` of a 10,000-concept value set (a stored CodeSystem of
   10,000 concepts in a 3-level hierarchy and a ValueSet including all of it):
   the full expansion, a page of 20, a text filter and an ``is-a`` filter,
   through the HTTP app (FastAPI TestClient), medians of ``--reps`` calls.

Usage: .venv/bin/python bench/bench_terminology.py [--bundles 20] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-r4"


def _bindings(on: bool) -> None:
    """Compile the element tables with (on) or without (off) the binding tables."""
    from fhir_server.model import bindings, definitions

    if not hasattr(_bindings, "original"):
        _bindings.original = bindings.binding_table  # type: ignore[attr-defined]
    original = _bindings.original  # type: ignore[attr-defined]
    definitions.structs.cache_clear()
    bindings.binding_table = original if on else (lambda: {})  # type: ignore[assignment]
    import fhir_server.model.definitions as d

    d.structs.cache_clear()
    # definitions.structs imports binding_table from the module at call time
    d.structs()


def _files(n: int) -> list[Path]:
    files = sorted(p for p in SYNTHEA.glob("*.json") if not p.name.startswith(("hospital", "practitioner")))
    shared = sorted(p for p in SYNTHEA.glob("*.json") if p.name.startswith(("hospital", "practitioner")))
    return shared + files[:n]


def bench_validation(files: list[Path], reps: int) -> None:
    """The binding checks live in the strict walk: time the walk alone, then the whole validation."""
    from fhir_server.model.validation import validate_resource, walk

    resources = []
    for f in files:
        for e in json.loads(f.read_bytes())["entry"]:
            resources.append(e["resource"])
    for on in (True, False):  # warm-up: model classes, compiled tables
        _bindings(on)
        for r in resources:
            validate_resource(r)
    for label, fn, n in (("strict walk (where the binding checks run)", lambda r: walk(r, r["resourceType"]), reps * 3),
                         ("whole validation (walk + R4B model)", validate_resource, reps)):
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(n):
            for on in (True, False):
                _bindings(on)
                t = time.perf_counter()
                for r in resources:
                    fn(r)
                times[on].append(time.perf_counter() - t)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"{label}, {len(resources)} Synthea resources, median of {n}: bindings on {on * 1000:.0f} ms, "
              f"off {off * 1000:.0f} ms, added {100 * (on - off) / off:+.1f}%  "
              f"({on / len(resources) * 1e6:.0f} vs {off / len(resources) * 1e6:.0f} us/resource)")
    _bindings(True)


def bench_ingest(files: list[Path], reps: int) -> None:
    from fhir_server.config import Settings
    from fhir_server.loader import load_file
    from fhir_server.plugins import install
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade

    times: dict[bool, list[float]] = {True: [], False: []}
    count = 0
    for _ in range(reps):
        for on in (True, False):
            _bindings(on)
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/ingest.sqlite"
                settings = Settings(database_url=url, run_background_jobs=False, terminology_load=False)
                install(settings)
                db = Database(url)
                upgrade(db.engine)
                t = time.perf_counter()
                count = 0
                for f in files:
                    result = load_file(db, settings, f)
                    count += result.resources
                    if result.failures:
                        raise SystemExit(f"{f.name}: {result.failures[:2]}")
                times[on].append(time.perf_counter() - t)
                db.dispose()
    _bindings(True)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"Synthea ingest of {len(files)} bundles ({count} resources, SQLite, in-process): bindings on {on:.2f} s, "
          f"off {off:.2f} s, added {100 * (on - off) / off:.1f}%  ({count / on:.0f} vs {count / off:.0f} resources/s)")


def bench_expand(reps: int) -> None:
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings

    concepts = []  # 10 groups x 9 categories x 110 concepts = 10,000 concepts in 3 levels
    for a in range(10):
        top = {"code": f"A{a}", "display": f"Group {a}", "concept": []}
        for b in range(9):
            mid = {"code": f"A{a}-B{b}", "display": f"Category {a} {b}", "concept": []}
            for c in range(110):
                words = f"Concept {a} {b} {c}" + (" tremor" if c % 50 == 0 else "")
                mid["concept"].append({"code": f"A{a}-B{b}-C{c}", "display": words})
            top["concept"].append(mid)
        concepts.append(top)
    cs = {"resourceType": "CodeSystem", "url": "http://example.org/cs/bench-10k", "status": "active",
          "content": "complete", "concept": concepts}
    vs = {"resourceType": "ValueSet", "url": "http://example.org/vs/bench-10k", "status": "active",
          "compose": {"include": [{"system": cs["url"]}]}}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/expand.sqlite", run_background_jobs=False,
                            terminology_load=False, export_dir=f"{tmp}/export")
        app = build_app(settings)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from benchlib import bearer_headers

        with TestClient(app, headers=bearer_headers(settings, app.state.db)) as c:
            assert c.post("/fhir/CodeSystem", json=cs).status_code == 201
            assert c.post("/fhir/ValueSet", json=vs).status_code == 201
            total = c.get("/fhir/ValueSet/$expand", params={"url": vs["url"], "count": 0}).json()["expansion"]["total"]
            cases = {
                "full expansion (all concepts in the response)": {"url": vs["url"]},
                "page of 20 (count=20, offset=5000)": {"url": vs["url"], "count": 20, "offset": 5000},
                "text filter (filter=tremor)": {"url": vs["url"], "filter": "tremor"},
            }
            print(f"$expand of a {total}-concept value set (SQLite, in-process HTTP), median of {reps}:")
            for label, params in cases.items():
                times = []
                for _ in range(reps):
                    t = time.perf_counter()
                    r = c.get("/fhir/ValueSet/$expand", params=params)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text[:300]
                print(f"  {label}: {statistics.median(times) * 1000:.0f} ms ({len(r.content) / 1024:.0f} KiB)")
            isa = {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": {
                "resourceType": "ValueSet", "status": "active", "compose": {"include": [
                    {"system": cs["url"], "filter": [{"property": "concept", "op": "is-a", "value": "A3"}]}]}}}]}
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                r = c.post("/fhir/ValueSet/$expand", json=isa)
                times.append(time.perf_counter() - t)
            print(f"  is-a filter (A3, {r.json()['expansion']['total']} concepts): {statistics.median(times) * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundles", type=int, default=20, help="Synthea patient bundles to ingest per run")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (medians are reported)")
    ap.add_argument("--skip-ingest", action="store_true")
    args = ap.parse_args()
    if not SYNTHEA.exists():
        raise SystemExit(f"{SYNTHEA} is absent")
    files = _files(args.bundles)
    bench_validation(files, args.reps)
    if not args.skip_ingest:
        bench_ingest(files, args.reps)
    bench_expand(max(args.reps, 5))


if __name__ == "__main__":
    main()
