"""Derive resources/summary-elements.json from the R4 StructureDefinitions.

For every resource type: the top-level elements flagged isSummary (served for
`_summary=true`) and those with min >= 1 (kept for `_summary=text`).
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
        for el in sd["snapshot"]["element"]:
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
        out[sd["type"]] = {"summary": summary, "mandatory": mandatory}
    return out


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    target = ROOT / "resources" / "summary-elements.json"
    target.write_text(json.dumps(derive(source), indent=1, sort_keys=True) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
