"""Derive terminology/ordered-codes.json from the R4 definitions.

An ordered code system is one whose concepts have a rank: R4's
request-priority lists routine, urgent, asap, stat, each defined as "higher
priority than" the one before, so its concept order is its rank order. R4 has
no CodeSystem flag for this, hence the short list below; everything else (the
codes in order, the elements bound to them with a required binding, the search
parameters over those elements) is read from the definitions.

Run: python scripts/derive_ordered_codes.py [path to fhir-r4-definitions]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFS = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "fhir-r4-definitions"
OUT = ROOT / "terminology" / "ordered-codes.json"

# code system url -> value set url binding elements to it (ascending concept order)
ORDERED = {"http://hl7.org/fhir/request-priority": "http://hl7.org/fhir/ValueSet/request-priority"}


def main() -> None:
    entries = json.loads((DEFS / "valuesets.json").read_text())["entry"]
    systems = {}
    for e in entries:
        r = e["resource"]
        if r.get("resourceType") == "CodeSystem" and r.get("url") in ORDERED:
            systems[r["url"]] = {"valueSet": ORDERED[r["url"]], "codes": [c["code"] for c in r.get("concept", [])]}
    by_vs = {v["valueSet"]: s for s, v in systems.items()}
    elements = {}
    for e in json.loads((DEFS / "profiles-resources.json").read_text())["entry"]:
        r = e["resource"]
        if r.get("resourceType") != "StructureDefinition":
            continue
        for el in r.get("snapshot", {}).get("element", []):
            b = el.get("binding") or {}
            vs = (b.get("valueSet") or "").split("|")[0]
            if vs in by_vs and b.get("strength") == "required":
                elements[el["path"]] = by_vs[vs]
    params: dict[str, dict[str, str]] = {}
    for e in json.loads((DEFS / "search-parameters.json").read_text())["entry"]:
        r = e["resource"]
        expr = r.get("expression") or ""
        for base in r.get("base", []):
            if r.get("type") == "token" and expr == f"{base}.{expr.split('.')[-1]}" and expr in elements:
                params.setdefault(base, {})[r["code"]] = elements[expr]
    OUT.parent.mkdir(exist_ok=True)
    doc = {"_source": "scripts/derive_ordered_codes.py from the FHIR R4 definitions",
           "codeSystems": systems, "elements": dict(sorted(elements.items())),
           "searchParameters": dict(sorted(params.items()))}
    OUT.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
