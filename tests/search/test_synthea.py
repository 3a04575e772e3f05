"""Realistic data: a few Synthea bundles indexed and searched (skipped without shared data)."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-r4"
FILES = [f for f in sorted(glob.glob(str(SHARED / "*.json"))) if "hospital" not in f and "practitioner" not in f][:3]

pytestmark = pytest.mark.skipif(not FILES, reason="shared Synthea data not available")


def _resolved(path: str) -> list[dict]:
    """The bundle's resources with urn:uuid references rewritten to Type/id, as a transaction would."""
    bundle = json.loads(Path(path).read_text())
    mapping = {e["fullUrl"]: f'{e["resource"]["resourceType"]}/{e["resource"]["id"]}' for e in bundle["entry"]}
    raw = json.dumps([e["resource"] for e in bundle["entry"]])
    for k, v in mapping.items():
        raw = raw.replace(f'"{k}"', f'"{v}"')
    return json.loads(raw)


@pytest.fixture(scope="module")
def loaded(db):
    out = []
    for f in FILES:
        res = _resolved(f)
        for r in res:
            db.put(r)
        out.append(res)
    return out


def test_patient_observations(db, loaded):
    for res in loaded:
        patient = next(r for r in res if r["resourceType"] == "Patient")
        expected = {r["id"] for r in res if r["resourceType"] == "Observation"}
        b = db.bundle("Observation", f"patient=Patient/{patient['id']}&_count=1000&_elements=id")
        assert {e["resource"]["id"] for e in b["entry"]} == expected
        assert b["total"] == len(expected)
        assert db.bundle("Observation", "_summary=count", compartment=("Patient", patient["id"]))["total"] == len(expected)
        family = patient["name"][0]["family"]
        assert patient["id"] in db.set_ids("Patient", f"family={family[:3].lower()}")
        assert db.bundle("Encounter", f"patient.family:exact={family}&_summary=count")["total"] == \
               sum(1 for r in res if r["resourceType"] == "Encounter")


def test_codes_and_values(db, loaded):
    obs = [r for res in loaded for r in res if r["resourceType"] == "Observation" and "valueQuantity" in r]
    sample = obs[0]
    code = sample["code"]["coding"][0]
    same = [o for o in obs if o["code"]["coding"][0]["code"] == code["code"]]
    value = sample["valueQuantity"]["value"]
    above = {o["id"] for o in same if o["valueQuantity"]["value"] > value}
    got = db.set_ids("Observation", f"code={code['system']}|{code['code']}&value-quantity=gt{value!r}&_count=1000")
    assert got == above
    got = db.set_ids("Observation", f"code-value-quantity={code['system']}|{code['code']}$gt{value!r}&_count=1000")
    assert got == above
