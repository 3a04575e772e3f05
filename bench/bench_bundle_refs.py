"""Cost of the typed fullUrl rewrite of transaction Bundles (rest/bundle_refs.py).

The transaction rules replace `urn:uuid:`/`urn:oid:` fullUrls in Reference elements
and in every uri/url/oid/uuid element and narrative link, which needs a walk that
knows each element's type. This prints, per resource of the first N Synthea
Bundles, the median time of that walk next to a plain untyped walk that rewrites
only `reference` keys (what the server did before), and their ratio.

    .venv/bin/python bench/bench_bundle_refs.py --bundles 5 --repeat 5
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea-r4"


def _untyped(node, mapping) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in mapping:
            node["reference"] = mapping[ref]
        for v in node.values():
            if isinstance(v, (dict, list)):
                _untyped(v, mapping)
    elif isinstance(node, list):
        for v in node:
            _untyped(v, mapping)


def main() -> None:
    from fhir_server.rest import bundle_refs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundles", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    files = sorted(SYNTHEA.glob("*.json"))[: args.bundles]
    if not files:
        raise SystemExit(f"no Synthea bundles under {SYNTHEA}")
    docs = [json.loads(f.read_bytes()) for f in files]
    n = sum(len(d["entry"]) for d in docs)
    results: dict[str, list[float]] = {"untyped (before)": [], "typed (bundle_refs)": []}
    for _ in range(args.repeat):
        for label in results:
            work = copy.deepcopy(docs)
            t0 = time.perf_counter()
            for d in work:
                mapping = {e["fullUrl"]: f"{e['resource']['resourceType']}/x" for e in d["entry"] if "fullUrl" in e}
                for e in d["entry"]:
                    if label.startswith("untyped"):
                        _untyped(e["resource"], mapping)
                    else:
                        bundle_refs.rewrite(e["resource"], mapping, None)
            results[label].append((time.perf_counter() - t0) / n * 1e6)
    med = {k: statistics.median(v) for k, v in results.items()}
    for k, v in med.items():
        print(f"{k:22s} {v:8.1f} us/resource (median of {args.repeat}, {n} resources)")
    print(f"ratio typed/untyped    {med['typed (bundle_refs)'] / med['untyped (before)']:.2f}")
    print("(2-core machine shared with other engineers: absolute times are noisy; the ratio is the figure)")


if __name__ == "__main__":
    main()
