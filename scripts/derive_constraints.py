"""Derive the FHIRPath invariants of the R4 base definitions into ``resources/constraints.json``.

Usage: python scripts/derive_constraints.py [DEFINITIONS_DIR] [OUT_DIR]

Output: element path -> list of ``[key, severity, human, expression]``, for
every resource and complex datatype, e.g.::

    {"Patient": [["dom-2", "error", "If the resource is contained ...", "contained.contained.empty()"], ...],
     "Patient.contact": [["pat-1", "error", "SHALL at least contain ...", "name.exists() or ..."]],
     "Period": [["per-1", "error", "If present, start SHALL have a lower value than end", "..."]]}

``$validate`` evaluates each at every occurrence of its element. Left out, as
the strict walk enforces them itself on every write: ``ele-1`` (every element
has a value or children) and ``ext-1`` (an extension has a value or
extensions, not both).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEFS = REPO.parent / "shared" / "data" / "fhir-r4-definitions"
ENFORCED_BY_WALK = {"ele-1", "ext-1"}
NON_STANDARD_TYPES = {"SubscriptionStatus"}


def derive(defs: Path) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((defs / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
                continue
            if sd.get("kind") not in ("complex-type", "resource") or sd.get("type") in NON_STANDARD_TYPES:
                continue
            for el in sd["snapshot"]["element"]:
                path = el["path"]
                if path.split(".")[0] != sd["type"]:
                    continue
                for c in el.get("constraint") or []:
                    if c.get("key") in ENFORCED_BY_WALK or not c.get("expression"):
                        continue
                    row = [c["key"], c.get("severity", "error"), c.get("human", ""), c["expression"]]
                    if row not in out.setdefault(path, []):
                        out[path].append(row)
    return dict(sorted(out.items()))


def main(argv: list[str]) -> None:
    defs = Path(argv[1]) if len(argv) > 1 else DEFAULT_DEFS
    out_dir = Path(argv[2]) if len(argv) > 2 else REPO / "resources"
    table = derive(defs)
    (out_dir / "constraints.json").write_text(json.dumps(table, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{sum(len(v) for v in table.values())} invariants on {len(table)} elements")


if __name__ == "__main__":
    main(sys.argv)
