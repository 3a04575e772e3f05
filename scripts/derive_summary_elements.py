"""Derive resources/summary-elements.json from the R4 StructureDefinitions.

For every resource type: the top-level elements flagged isSummary (served for
`_summary=true`) and those with min >= 1 (kept for `_summary=text`); and, under
"nested", for each backbone element (a path with children of its own, such as
CapabilityStatement.rest.resource) the children flagged isSummary, so that
`_summary=true` trims inside backbone elements too (R4 §3.1.1.5.8).
Run: python scripts/derive_summary_elements.py [path/to/profiles-resources.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "fhir-r4-definitions" / "profiles-resources.json"


def derive(source: Path) -> dict:
    bundle = json.loads(source.read_text())
    out: dict[str, dict[str, list[str]]] = {}
    for entry in bundle["entry"]:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource" or sd.get("abstract"):
            continue
        summary, mandatory = [], []
        elements = sd["snapshot"]["element"]
        paths = {el["path"] for el in elements}
        nested: dict[str, list[str]] = {}
        for el in elements:
            parts = el["path"].split(".")
            parent = ".".join(parts[1:-1])
            if len(parts) > 2 and ".".join(parts[:-1]) in paths and el.get("isSummary"):
                name = parts[-1][:-3] + "*" if parts[-1].endswith("[x]") else parts[-1]
                nested.setdefault(parent, []).append(name)
        for path in {".".join(p.split(".")[1:-1]) for p in paths if p.count(".") >= 2}:
            nested.setdefault(path, [])  # a backbone element with no summary children keeps only what the spec always keeps
        for el in elements:
            parts = el["path"].split(".")
            if len(parts) != 2:
                continue
            name = parts[1]
            if name.endswith("[x]"):
                name = name[:-3] + "*"  # a choice: any valueX, matched by prefix
            if el.get("isSummary"):
                summary.append(name)
            if el.get("min", 0) >= 1:
                mandatory.append(name)
        out[sd["type"]] = {"summary": summary, "mandatory": mandatory, "nested": {k: sorted(v) for k, v in sorted(nested.items())}}
    return out


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    target = ROOT / "resources" / "summary-elements.json"
    target.write_text(json.dumps(derive(source), indent=1, sort_keys=True) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
