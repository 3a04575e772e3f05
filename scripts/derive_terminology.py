"""Derive the served terminology and the compiled binding tables from the R4 definitions.

Usage: python scripts/derive_terminology.py [DEFINITIONS_DIR] [OUT_DIR]

Reads ``valuesets.json``, ``v2-tables.json``, ``v3-codesystems.json``,
``conceptmaps.json`` and the StructureDefinitions (``profiles-types.json``,
``profiles-resources.json``) of ../shared/data/fhir-r4-definitions and writes
into ``terminology/``:

* ``r4-codesystems.ndjson.gz``, ``r4-valuesets.ndjson.gz``,
  ``r4-conceptmaps.ndjson.gz``: every CodeSystem, ValueSet and ConceptMap,
  narrative (``text``) dropped, one resource per line. The server loads them
  into its database at start-up (once per package version).
* ``bindings.json``::

    {"fhirVersion": "4.0.1",
     "bindings": {"Patient.gender": ["required", "http://hl7.org/fhir/ValueSet/administrative-gender"], ...},
     "valueSets": {"http://hl7.org/fhir/ValueSet/administrative-gender":
                       {"http://hl7.org/fhir/administrative-gender": ["male", "female", "other", "unknown"]}, ...},
     "open": {"http://hl7.org/fhir/ValueSet/mimetypes": "CodeSystem urn:ietf:bcp:13 is not known ...", ...}}

  ``bindings`` holds every coded element (of every resource and datatype)
  with a required, extensible or preferred binding; ``valueSets`` the
  expansion (system -> codes) of each bound value set this script can
  enumerate; ``open`` the bound value sets it cannot (grammar-based systems
  such as BCP-13 MIME types, BCP-47 languages, ISO 4217 currencies, UCUM, or
  external ones such as SNOMED CT and LOINC) with the reason. A required
  binding to an open value set cannot be checked by lookup and is not
  enforced; extensible and preferred bindings to sets larger than
  ``MAX_SOFT_SET`` codes are left out (they only ever give warnings).
"""

from __future__ import annotations

import gzip
import json
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fhir_server.terminology.expand import TerminologyError, expand, split_canonical  # noqa: E402
from fhir_server.terminology.package import PackageResolver  # noqa: E402

DEFAULT_DEFS = REPO.parent / "shared" / "data" / "fhir-r4-definitions"
SOURCES = ("valuesets.json", "v2-tables.json", "v3-codesystems.json", "conceptmaps.json")
CODED_TYPES = {"code", "Coding", "CodeableConcept", "string", "uri"}
MAX_SOFT_SET = 2000
# Vendor additions in the shared bundles that are not FHIR R4 4.0.1 (see derive_elements.py).
NON_STANDARD_TYPES = {"SubscriptionStatus"}


def _resources(defs: Path) -> list[dict]:
    out = []
    seen: set[tuple[str, str]] = set()
    for name in SOURCES:
        bundle = json.loads((defs / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            r = entry["resource"]
            key = (r["resourceType"], r.get("id"))
            if key in seen:
                continue
            seen.add(key)
            r.pop("text", None)
            out.append(r)
    return out


def _bindings(defs: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((defs / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
                continue
            if sd.get("type") in NON_STANDARD_TYPES or sd.get("kind") == "primitive-type":
                continue
            for el in sd["snapshot"]["element"]:
                b = el.get("binding")
                if not b or b.get("strength") not in ("required", "extensible", "preferred") or not b.get("valueSet"):
                    continue
                if not {t.get("code") for t in el.get("type", [])} & CODED_TYPES:
                    continue
                if el["path"].split(".")[0] != sd["type"]:
                    continue
                out[el["path"]] = [b["strength"], split_canonical(b["valueSet"])[0]]
    return dict(sorted(out.items()))


# The project has no canonical base of its own yet; its derived resources use this one.
NATIONAL_VS_URL = "http://fhir-server.example.org/fhir/ValueSet/national-identifier-types"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def national_identifier_types(mapping: Path) -> dict:
    """ValueSet of the Identifier.type codes (HL7 v2 table 0203) of the national schemes in mappings/.

    Table 0203 defines ``NNxxx`` as a template (xxx = ISO 3166 alpha-3 country), not
    as codes, so the set is published as an expansion: one entry per type code used,
    its display naming the schemes that use it."""
    import yaml

    raw = yaml.safe_load(mapping.read_text(encoding="utf-8"))
    by_code: dict[str, list[str]] = {}
    for scheme in raw["schemes"]:
        by_code.setdefault(scheme["type_code"], []).append(scheme["name"])
    contains = []
    for code, names in sorted(by_code.items()):
        kind = "National unique individual identifier" if code == "NI" else f"National person identifier ({code[2:]})"
        contains.append({"system": V2_0203, "code": code, "display": f"{kind}: {', '.join(names)}"})
    return {
        "resourceType": "ValueSet", "id": "national-identifier-types", "url": NATIONAL_VS_URL,
        "name": "NationalIdentifierTypes", "title": "Identifier types of the national person identifiers served",
        "status": "active", "experimental": False,
        "description": "Identifier.type codes (HL7 v2 table 0203) of the national person identifier schemes in "
                       "mappings/national_identifiers.yaml. Derived by scripts/derive_terminology.py.",
        "expansion": {"identifier": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, NATIONAL_VS_URL)}",
                      "timestamp": "2026-01-01T00:00:00Z", "total": len(contains), "contains": contains},
    }


def _write_ndjson(path: Path, resources: list[dict]) -> None:
    # mtime=0: the same input gives the same bytes (the file's hash marks the loaded version)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as fh:
        for r in resources:
            fh.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")


def derive(defs: Path, out_dir: Path) -> dict:
    resources = _resources(defs)
    resolver = PackageResolver(iter(resources))
    bindings = _bindings(defs)
    value_sets: dict[str, dict[str, list[str]]] = {}
    open_sets: dict[str, str] = {}
    for path, (strength, url) in bindings.items():
        if url in value_sets or url in open_sets:
            continue
        vs = resolver.value_set(url)
        if vs is None:
            open_sets[url] = "ValueSet not in the R4 definitions"
            continue
        try:
            entries = expand(vs, resolver)
        except TerminologyError as exc:
            open_sets[url] = exc.message
            continue
        by_system: dict[str, list[str]] = {}
        for e in entries:
            by_system.setdefault(e.system, []).append(e.code)
        value_sets[url] = by_system
    # soft bindings to very large sets are dropped (warnings only; not worth the memory)
    for path, (strength, url) in list(bindings.items()):
        size = sum(len(v) for v in value_sets.get(url, {}).values())
        if strength != "required" and (url not in value_sets or size > MAX_SOFT_SET):
            del bindings[path]
    used = {url for _s, url in bindings.values()}
    value_sets = {u: v for u, v in sorted(value_sets.items()) if u in used}
    open_sets = {u: r for u, r in sorted(open_sets.items()) if u in used}
    out_dir.mkdir(parents=True, exist_ok=True)
    by_type = {"CodeSystem": [], "ValueSet": [], "ConceptMap": []}
    for r in resources:
        by_type[r["resourceType"]].append(r)
    _write_ndjson(out_dir / "r4-codesystems.ndjson.gz", by_type["CodeSystem"])
    _write_ndjson(out_dir / "r4-valuesets.ndjson.gz", by_type["ValueSet"])
    _write_ndjson(out_dir / "r4-conceptmaps.ndjson.gz", by_type["ConceptMap"])
    local = out_dir / "local"
    local.mkdir(exist_ok=True)
    national = national_identifier_types(REPO / "mappings" / "national_identifiers.yaml")
    (local / "ValueSet-national-identifier-types.json").write_text(json.dumps(national, indent=1) + "\n", encoding="utf-8")
    tables = {"fhirVersion": "4.0.1", "bindings": bindings, "valueSets": value_sets, "open": open_sets}
    (out_dir / "bindings.json").write_text(json.dumps(tables, separators=(",", ":")) + "\n", encoding="utf-8")
    return {k: len(v) for k, v in by_type.items()} | {
        "required bindings": sum(1 for s, _ in bindings.values() if s == "required"),
        "required, not checkable": sum(1 for s, u in bindings.values() if s == "required" and u in open_sets),
        "soft bindings": sum(1 for s, _ in bindings.values() if s != "required"),
        "value sets compiled": len(value_sets),
    }


def main(argv: list[str]) -> None:
    defs = Path(argv[1]) if len(argv) > 1 else DEFAULT_DEFS
    out_dir = Path(argv[2]) if len(argv) > 2 else REPO / "terminology"
    summary = derive(defs, out_dir)
    print(", ".join(f"{k}: {v}" for k, v in summary.items()))
    tables = json.loads((out_dir / "bindings.json").read_text(encoding="utf-8"))
    for url, reason in tables["open"].items():
        print(f"not checkable: {url}: {reason}")


if __name__ == "__main__":
    main(sys.argv)
