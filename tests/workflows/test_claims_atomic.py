"""Nothing half-written (docs/claims.md): an approval is one transaction - the Claim, its
ClaimResponse, the guarantee's Binary (with its blob in the store) and DocumentReference,
and the patient's notification. When a step fails, none of it remains."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from fhir_server.storage import blobs
from fhir_server.storage.blobs.base import BlobStoreError
from fhir_server.workflows.claims import notify
from tests.workflows.claims_journey import claim, decision, eligible_items, submit_params, treatment
from tests.workflows.test_claims_submit import _count, parties  # noqa: F401  (fixture)

KINDS = ("Claim", "ClaimResponse", "Task", "DocumentReference", "Binary", "CommunicationRequest")


def _state(client, app, settings) -> tuple:
    with app.state.db.read() as conn:
        queued = conn.execute(text("SELECT count(*) FROM jobs")).scalar()
    stored = sorted(str(p) for p in Path(settings.blob_dir).rglob("*") if p.is_file() and ".partial" not in p.parts)
    return {k: _count(client, k) for k in KINDS}, queued, stored


class _DownStore:
    """The blob store unreachable (S3 away): every write fails."""

    name = "down"

    def __init__(self, real):
        self.real = real

    def writer(self, key):
        raise BlobStoreError("connection refused")

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_blob_store_down_is_503_and_nothing_is_written(app, client, parties, settings):
    patient, coverage, insurer, _ = parties
    before = _state(client, app, settings)
    real = blobs.current()
    blobs.use(_DownStore(real))
    try:
        r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment()])))
    finally:
        blobs.use(real)
    assert r.status_code == 503, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert _state(client, app, settings) == before


@pytest.mark.parametrize("path", ["submit", "decision"])
def test_a_step_failing_after_the_guarantee_leaves_no_claim_response_document_or_blob(app, client, parties, settings, path):
    patient, coverage, insurer, _ = parties
    if path == "decision":  # the handler's approval of a queued request for more
        r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment("tandbehandling")])))
        claim_id = r.json()["request"]["reference"].split("/")[1]
    before = _state(client, app, settings)

    def notifier_fails(_conn, event):
        assert event.document, "the guarantee is written before the notification"
        raise RuntimeError("notifier down")

    remove = notify.listen(notifier_fails)
    try:
        with TestClient(app, base_url="http://testserver", headers=client.headers, raise_server_exceptions=False) as c:
            if path == "submit":
                r = c.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment()])))
            else:
                r = c.post("/fhir/ClaimResponse", json=decision(claim_id, patient, insurer, "preauthorization", item=eligible_items(3)))
    finally:
        remove()
    assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"
    assert _state(client, app, settings) == before
