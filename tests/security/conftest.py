"""Fixtures of the consent and proxy tests."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.fast_read import FAST_READER

from .family import patient as family_patient

SCOPE = "openid fhirUser patient/*.rs"


@pytest.fixture
def as_person(app, issue_token):
    """as_person(person_id, patient=None, scope=SCOPE) -> a TestClient with that person's token."""
    clients = []

    def make(person: str, patient: str | None = None, scope: str = SCOPE, ref_type: str = "Patient") -> TestClient:
        tok = issue_token(scope=scope, patient=patient, fhir_user=f"{ref_type}/{person}")
        c = TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {tok}"})
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


# ---------------------------------------------------------------- the adversarial tests' (test_adversarial_*.py)


@pytest.fixture
def as_patient(app, issue_token):
    """as_patient(pid, scope=SCOPE, fhir_user=None) -> a TestClient with that patient's token whose
    fast reader counts the reads that asked the reference index (`c.membership_reads`)."""
    clients = []

    def make(pid: str, scope: str = SCOPE, fhir_user: str | None = None) -> TestClient:
        tok = issue_token(scope=scope, patient=pid, fhir_user=fhir_user or f"Patient/{pid}")
        c = TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {tok}"})
        c.__enter__()  # lifespan: the fast reader is opened
        reader = c.app_state.get(FAST_READER)
        assert reader is not None, "no fast reader: the fast path would not be tested"
        c.membership_reads = []  # (type, id) of each fast-path read that asked the reference index
        inner = reader.read_with_patients

        async def counting(res_type, res_id, params, _inner=inner, _log=c.membership_reads):
            _log.append((res_type, res_id))
            return await _inner(res_type, res_id, params)

        reader.read_with_patients = counting
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def pair(client):
    """(me, other): two fresh Patients."""
    me, _ = family_patient(client, name="Me")
    other, _ = family_patient(client, name="Other")
    return me, other
