"""The shipped terminology package: valid R4 (the start-up load trusts it), complete, and re-derivable."""

from __future__ import annotations

import collections

from fhir_server.model.validation import validate_resource
from fhir_server.terminology.package import binding_tables, iter_resources, package_resolver


def test_every_shipped_resource_is_valid_r4():
    counts: collections.Counter = collections.Counter()
    failures = []
    for r in iter_resources():
        counts[r["resourceType"]] += 1
        issues = validate_resource(r)
        if issues:
            failures.append(f"{r['resourceType']}/{r['id']}: {issues[0].diagnostics} at {issues[0].expression}")
    assert not failures, "\n".join(failures[:20])
    assert counts["CodeSystem"] > 1000 and counts["ValueSet"] > 1000 and counts["ConceptMap"] > 10


def test_ids_are_unique_per_type():
    seen = collections.Counter((r["resourceType"], r["id"]) for r in iter_resources())
    assert [k for k, n in seen.items() if n > 1] == []


def test_every_required_binding_value_set_is_served():
    resolver = package_resolver()
    tables = binding_tables()
    missing = [url for strength, url in tables["bindings"].values()
               if strength == "required" and resolver.value_set(url) is None]
    # the two that R4 itself does not publish as ValueSets (LOINC answer list, a vendor addition)
    assert set(missing) <= {"http://loinc.org/vs/LL379-9", "http://hl7.org/fhir/ValueSet/characteristic-combination"}


def test_derive_script_reproduces_the_binding_tables(tmp_path):
    import json
    import sys
    from pathlib import Path

    import pytest

    from tests.conftest import SHARED_DATA

    defs = SHARED_DATA / "fhir-r4-definitions"
    if not defs.exists():
        pytest.skip("../shared/data/fhir-r4-definitions is absent")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import derive_terminology

    derive_terminology.derive(defs, tmp_path)
    assert json.loads((tmp_path / "bindings.json").read_text()) == binding_tables()
