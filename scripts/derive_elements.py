"""Derive compact element tables from the official FHIR R4 StructureDefinitions.

The server validates JSON against these tables on every write, so they are
generated once here (and committed) rather than parsed from the 35 MB
definition bundles at start-up.

Usage: python scripts/derive_elements.py [DEFINITIONS_DIR] [OUT_DIR]

Output ``resources/elements.json``::

    {"fhirVersion": "4.0.1",
     "primitives": ["base64Binary", ...],
     "types":     {"HumanName": {ELEMENTS}, ...},   # complex datatypes
     "resources": {"Patient": {ELEMENTS}, ...}}

where ELEMENTS maps an element name to a spec with short keys:

    t  list of type codes ("Resource" means any resource, by its resourceType)
    m  "*" when the element repeats (absent means max 1)
    n  1 when the element is required (absent means optional)
    c  for choice elements ("value[x]"): the concrete JSON names, same order as t
    e  nested ELEMENTS of an inline BackboneElement/Element
    r  contentReference target, e.g. "Questionnaire.item" (t is absent then)

Output ``resources/resource-types.json``: sorted resource types that are
concrete in R4 and have a model class in fhir.resources.R4B.

The shared definition bundles are a vendor-extended R4 (a Meta.project/
Meta.accounts style multi-tenancy extension, some R5 back-ports and an extra
SubscriptionStatus resource).  The wire format is plain R4 4.0.1, so those
additions are removed here (``NON_STANDARD``) and the one element the
vendor replaced outright is restored (``R4_REPLACEMENTS``).  When the
fhirclient package (generated from R4 4.0.1) is installed, the result is
cross-checked against it and any remaining difference is printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEFS = REPO.parent / "shared" / "data" / "fhir-r4-definitions"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

# Elements in the shared bundles that are not part of FHIR R4 4.0.1.
NON_STANDARD_TYPES = {"SubscriptionStatus"}
NON_STANDARD = {
    "Meta": ["project", "author", "onBehalfOf", "account", "accounts", "compartment"],
    "Binary": ["url"],
    "DeviceDefinition": ["bodySite", "classification"],
    "ObservationDefinition": ["publisher"],
    "ResearchStudy": ["name", "label", "studyDesign", "region", "descriptionSummary", "classifier",
                      "associatedParty", "progressStatus", "whyStopped", "recruitment", "comparisonGroup",
                      "outcomeMeasure", "result"],
    "ResearchStudy.objective": ["description"],
}


def _choice(base: str, types: list[str], required: bool = False) -> dict:
    spec: dict = {"t": types, "c": [base + t[0].upper() + t[1:] for t in types]}
    if required:
        spec["n"] = 1
    return spec


_BACKBONE = {"id": {"t": ["string"]}, "extension": {"t": ["Extension"], "m": "*"},
             "modifierExtension": {"t": ["Extension"], "m": "*"}}
# Elements the vendor bundles changed, as published in R4 4.0.1.
R4_REPLACEMENTS = {
    "Bundle.entry.response.outcome": {"t": ["Resource"]},
    "EvidenceVariable.characteristic": {
        "t": ["BackboneElement"], "m": "*", "n": 1,
        "e": {
            **_BACKBONE,
            "description": {"t": ["string"]},
            "definition[x]": _choice("definition", ["Reference", "canonical", "CodeableConcept", "Expression",
                                                    "DataRequirement", "TriggerDefinition"], required=True),
            "usageContext": {"t": ["UsageContext"], "m": "*"},
            "exclude": {"t": ["boolean"]},
            "participantEffective[x]": _choice("participantEffective", ["dateTime", "Period", "Duration", "Timing"]),
            "timeFromStart": {"t": ["Duration"]},
            "groupMeasure": {"t": ["code"]},
        },
    },
}


def _apply_r4_corrections(tables: dict) -> None:
    """Strip vendor additions and restore replaced elements (see module docstring)."""
    for path, names in NON_STANDARD.items():
        head, *rest = path.split(".")
        node = tables[head]
        for part in rest:
            node = node[part]["e"]
        for name in names:
            node.pop(name, None)
    for path, spec in R4_REPLACEMENTS.items():
        head, *rest = path.split(".")
        node = tables[head]
        for part in rest[:-1]:
            node = node[part]["e"]
        node[rest[-1]] = spec


def check_against_fhirclient(elements: dict) -> list[str]:
    """Compare with fhirclient's models (generated from R4 4.0.1); returns differences."""
    try:
        import importlib

        importlib.import_module("fhirclient.models.patient")
    except ImportError:
        return ["(fhirclient not installed: cross-check skipped)"]
    diffs: list[str] = []
    seen: set = set()

    def walk(table: dict, cls, path: str) -> None:
        if (id(table), cls) in seen:
            return
        seen.add((id(table), cls))
        props = {p[1]: p for p in cls().elementProperties() if p[1] != "resourceType"}
        ours: dict[str, tuple[dict, str]] = {}
        for name, spec in table.items():
            for concrete, type_ in zip(spec.get("c", [name]), spec.get("t", [None])):
                ours[concrete] = (spec, type_)
        for k in sorted(set(ours) - set(props)):
            if not (cls.__name__ == "ExampleScenarioInstance" and k == "resourceType"):
                diffs.append(f"not in R4: {path}.{k}")
        for k in sorted(set(props) - set(ours)):
            diffs.append(f"missing from table: {path}.{k}")
        for k in sorted(set(ours) & set(props)):
            spec, type_ = ours[k]
            if type_ in elements["resources"] and type_ != "Resource":
                diffs.append(f"typed as a specific resource (R4 uses Resource): {path}.{k}")
            if (spec.get("m") == "*") != props[k][3]:
                diffs.append(f"cardinality differs: {path}.{k}")
            child = spec.get("e") or (elements["types"].get(type_) if type_ else None)
            if child is not None and hasattr(props[k][2], "elementProperties"):
                walk(child, props[k][2], f"{path}.{k}")

    for name, table in elements["resources"].items():
        if name in ("Resource", "DomainResource"):
            continue
        module = importlib.import_module("fhirclient.models." + name.lower())
        walk(table, getattr(module, name), name)
    return diffs


def _type_code(t: dict) -> str:
    """Map FHIRPath system types (used for ids/urls) back to their FHIR primitive."""
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext["valueUrl"]
        return "string"
    return code


def _elements(sd: dict) -> dict:
    """Nest a snapshot's flat element list into name -> spec trees."""
    root: dict = {}
    # path -> dict of children for inline backbone elements
    nodes: dict[str, dict] = {sd["snapshot"]["element"][0]["path"]: root}
    for el in sd["snapshot"]["element"][1:]:
        if el.get("sliceName") or el.get("max") == "0":
            continue
        path = el["path"]
        parent_path, name = path.rsplit(".", 1)
        parent = nodes.get(parent_path)
        if parent is None:  # child of a skipped element
            continue
        spec: dict = {}
        if "contentReference" in el:
            spec["r"] = el["contentReference"].lstrip("#")
        else:
            types = [_type_code(t) for t in el.get("type", [])]
            spec["t"] = types
            if name.endswith("[x]"):
                base = name[:-3]
                spec["c"] = [base + ty[0].upper() + ty[1:] for ty in types]
            elif types in (["BackboneElement"], ["Element"]):
                spec["e"] = nodes[path] = {}
        if el.get("max") != "1":
            spec["m"] = "*"
        if el.get("min", 0) >= 1:
            spec["n"] = 1
        parent[name] = spec
    return root


def derive(defs_dir: Path) -> tuple[dict, list[str]]:
    primitives: list[str] = []
    types: dict = {}
    resources: dict = {}
    concrete_resources: list[str] = []
    for fname in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((defs_dir / fname).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
                continue
            kind = sd.get("kind")
            if sd["type"] in NON_STANDARD_TYPES:
                continue
            if kind == "primitive-type":
                primitives.append(sd["id"])
            elif kind == "complex-type":
                types[sd["type"]] = _elements(sd)
            elif kind == "resource":
                resources[sd["type"]] = _elements(sd)
                if not sd.get("abstract"):
                    concrete_resources.append(sd["type"])
    _apply_r4_corrections({**types, **resources})
    elements = {
        "fhirVersion": "4.0.1",
        "primitives": sorted(primitives),
        "types": dict(sorted(types.items())),
        "resources": dict(sorted(resources.items())),
    }
    return elements, sorted(concrete_resources)


def served_types(r4_types: list[str]) -> list[str]:
    """Keep only the R4 types the R4B model library can also parse."""
    from fhir.resources import R4B

    out = []
    for name in r4_types:
        try:
            R4B.get_fhir_model_class(name)
        except Exception:
            continue
        out.append(name)
    return out


def main(argv: list[str]) -> None:
    defs_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_DEFS
    out_dir = Path(argv[2]) if len(argv) > 2 else REPO / "resources"
    elements, concrete = derive(defs_dir)
    served = served_types(concrete)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "elements.json").write_text(
        json.dumps(elements, separators=(",", ":"), sort_keys=False) + "\n", encoding="utf-8"
    )
    (out_dir / "resource-types.json").write_text(json.dumps(served, indent=0) + "\n", encoding="utf-8")
    for diff in check_against_fhirclient(elements):
        print("fhirclient cross-check:", diff)
    dropped = sorted(set(concrete) - set(served))
    print(f"{len(elements['resources'])} resource definitions, {len(elements['types'])} datatypes, "
          f"{len(served)} served types; not in R4B: {', '.join(dropped)}")


if __name__ == "__main__":
    main(sys.argv)
