"""Writes are validated strictly; a rejected write stores nothing."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "body, expression",
    [
        ({"resourceType": "Patient", "active": "yes"}, "Patient.active"),
        ({"resourceType": "Patient", "multipleBirthInteger": "2"}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "gender": 5}, "Patient.gender"),
        ({"resourceType": "Patient", "identifier": [{"sytem": "urn:x", "value": "1"}]}, "Patient.identifier[0].sytem"),
        ({"resourceType": "Patient", "birthDate": "1990-02-30"}, "Patient.birthDate"),
        ({"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
    ],
)
def test_invalid_resource_is_rejected_with_expression(client, body, expression):
    before = client.get("/fhir/Patient/_history?_count=0").json()["total"]
    r = client.post("/fhir/Patient", json=body)
    assert r.status_code in (400, 422), r.text
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    expressions = [e for i in oo["issue"] for e in i.get("expression", [])]
    assert expression in expressions, oo
    assert all(i.get("diagnostics") for i in oo["issue"])
    assert client.get("/fhir/Patient/_history?_count=0").json()["total"] == before


def test_non_object_body_is_400(client):
    r = client.post("/fhir/Patient", content=b"[1,2]", headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 400


def test_empty_body_is_400(client):
    r = client.post("/fhir/Patient", content=b"", headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 400
