"""Derive the compact search tables the server loads at start-up.

The official R4 definition bundles are ~40 MB; the search engine needs only a
few fields of each SearchParameter, split per resource type, so they are
derived once here and committed under ``resources/``.

Usage: python scripts/derive_search_parameters.py [DEFINITIONS_DIR] [OUT_DIR]

Output ``resources/search-parameters.json``::

    {"fhirVersion": "4.0.1",
     "params": [{"url", "code", "type", "description",
                 "base": [types],
                 "expr": {type: "FHIRPath for that type only"},   # absent: not indexable
                 "target": [types], "components": [{"code", "type", "expression"}],
                 "comparator": [...], "modifier": [...]}],
     "summary": {type: [top-level elements with isSummary]},
     "mandatory": {type: [top-level elements with min > 0]}}

Output ``resources/compartment-patient.json``: ``{type: [param codes]}``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEFS = REPO.parent / "shared" / "data" / "fhir-r4-definitions"


def split_union(expr: str) -> list[str]:
    """Split a FHIRPath expression on top-level ``|`` (not inside parentheses/quotes)."""
    parts, depth, quote, cur = [], 0, False, []
    for ch in expr:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "|" and depth == 0 and not quote:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _root(part: str) -> str:
    m = re.match(r"\(*\s*([A-Za-z_%][A-Za-z0-9_]*)", part)
    return m.group(1) if m else ""


def expression_for(expr: str, res_type: str, bases: list[str]) -> str | None:
    """Keep only the union branches that apply to ``res_type``."""
    keep = []
    for part in split_union(expr):
        root = _root(part)
        if root == res_type or root in ("Resource", "DomainResource"):
            keep.append(part)
        elif root and root[0].islower() and len(bases) == 1:
            # e.g. InsurancePlan "name | alias": relative to the resource itself.
            keep.append(part)
    return " | ".join(keep) or None


def main(defs: Path, out: Path) -> None:
    bundle = json.loads((defs / "search-parameters.json").read_text())
    sps = [e["resource"] for e in bundle["entry"]]
    by_url = {sp["url"]: sp for sp in sps}
    params = []
    for sp in sps:
        bases = sp["base"]
        item: dict = {
            "url": sp["url"],
            "code": sp["code"],
            "type": sp["type"],
            "description": sp.get("description", ""),
            "base": bases,
        }
        expr = sp.get("expression")
        if expr:
            per = {}
            for b in bases:
                e = expression_for(expr, b, bases)
                if e:
                    per[b] = e
            item["expr"] = per
        if sp.get("target"):
            item["target"] = sp["target"]
        if sp.get("component"):
            comps = []
            for c in sp["component"]:
                d = by_url.get(c["definition"])
                comps.append(
                    {
                        "code": d["code"] if d else c["definition"].rsplit("/", 1)[-1],
                        "type": d["type"] if d else "token",
                        "expression": c["expression"],
                    }
                )
            item["components"] = comps
        for k in ("comparator", "modifier"):
            if sp.get(k):
                item[k] = sp[k]
        params.append(item)

    summary: dict[str, list[str]] = {}
    mandatory: dict[str, list[str]] = {}
    profiles = json.loads((defs / "profiles-resources.json").read_text())
    for e in profiles["entry"]:
        sd = e["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("abstract") or sd.get("derivation") == "constraint":
            continue
        t = sd["type"]
        summ, mand = [], []
        for el in sd["snapshot"]["element"]:
            path = el["path"]
            if path.count(".") != 1:
                continue
            name = path.split(".", 1)[1]
            names = [name]
            if name.endswith("[x]"):
                base = name[:-3]
                names = [base + tt["code"][0].upper() + tt["code"][1:] for tt in el.get("type", [])]
            if el.get("isSummary"):
                summ.extend(names)
            if el.get("min", 0) > 0:
                mand.extend(names)
        summary[t] = summ
        mandatory[t] = mand

    out.mkdir(parents=True, exist_ok=True)
    doc = {"fhirVersion": "4.0.1", "params": params, "summary": summary, "mandatory": mandatory}
    (out / "search-parameters.json").write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))

    comp = json.loads((defs / "compartmentdefinition-patient.json").read_text())
    cmap = {r["code"]: r["param"] for r in comp["resource"] if r.get("param")}
    (out / "compartment-patient.json").write_text(json.dumps(cmap, indent=0, sort_keys=True))
    print(f"{len(params)} search parameters, {len(cmap)} compartment types -> {out}")


if __name__ == "__main__":
    defs = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEFS
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "resources"
    main(defs, out)
