"""Fixtures: a temp SQLite engine with the schema, a recording fake apply_transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.errors import FhirError, Issue
from fhir_server.storage.db import make_engine
from fhir_server.storage.schema import metadata

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "hl7v2-samples"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/data/hl7v2-samples")


def samples_or_skip() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip("shared HL7 v2 samples (../shared/data/hl7v2-samples) not present")
    return SAMPLES


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'hl7.sqlite'}")
    metadata.create_all(eng)
    yield eng
    eng.dispose()


class FakeApply:
    """Records bundles; validates every entry resource with the R4B models."""

    def __init__(self):
        self.bundles: list[dict] = []
        self.fail_with: Exception | None = None

    def __call__(self, bundle: dict) -> dict:
        from fhir.resources.R4B import get_fhir_model_class

        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        for e in bundle["entry"]:
            assert e["request"]["method"] in ("POST", "PUT", "PATCH", "DELETE")
            if "resource" in e:
                get_fhir_model_class(e["resource"]["resourceType"]).model_validate(e["resource"])
        if self.fail_with is not None:
            raise self.fail_with
        self.bundles.append(bundle)
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": []}


@pytest.fixture
def fake_apply():
    return FakeApply()


def fhir_failure(msg: str = "boom") -> FhirError:
    return FhirError(422, [Issue("error", "processing", msg, ["Patient.identifier"])])
