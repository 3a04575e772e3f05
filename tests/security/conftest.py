"""Fixtures of the consent and proxy tests."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

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
