"""Bad input of every kind gets an OperationOutcome with a 4xx status, never a bare 500."""

from __future__ import annotations

import pytest

CASES = [
    ("GET", "/fhir/patient/1", None, {}),
    ("GET", "/fhir/Patient/1/_history/abc", None, {}),
    ("POST", "/fhir/Patient/123", b"{}", {"Content-Type": "application/fhir+json"}),
    ("PUT", "/fhir/Patient/bad id!", b'{"resourceType":"Patient","id":"bad id!"}', {"Content-Type": "application/fhir+json"}),
    ("PUT", "/fhir/Patient/x", b'{"resourceType":"Patient"}', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir/Patient", b'"just a string"', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient","name":[{"given":"Anna"}]}', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient","contained":[{"resourceType":"Nope"}]}', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient","birthDate":null}', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir/Patient", b'\xff\xfe', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir/Patient", b'{"resourceType":"Patient","extension":[{"url":"x","valueString":"a","extension":[{"url":"y","valueString":"b"}]}]}', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir", b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"FLY","url":"Patient"}}]}', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir", b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"},"request":{"method":"PUT","url":"Patient"}}]}', {"Content-Type": "application/fhir+json"}),
    ("POST", "/fhir", b'{"resourceType":"Bundle","type":"transaction","entry":"x"}', {"Content-Type": "application/fhir+json"}),
    ("GET", "/fhir/Patient?_count=abc", None, {}),
    ("GET", "/fhir/Patient?birthdate=notadate", None, {}),
    ("GET", "/fhir/Patient?nonsense=1", None, {}),
    ("GET", "/fhir/$nonexistent-op", None, {}),
    ("DELETE", "/fhir/Patient?", None, {}),
    ("PATCH", "/fhir/Patient/x", b"[]", {"Content-Type": "application/json-patch+json"}),
]


@pytest.mark.parametrize("method,path,body,headers", CASES)
def test_bad_input_is_an_operation_outcome(client, method, path, body, headers):
    r = client.request(method, path, content=body, headers=headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"] and all(i["severity"] and i["code"] and i.get("diagnostics") for i in oo["issue"])


def test_unexpected_errors_are_500_operation_outcomes_with_request_id(app, monkeypatch, auth_headers):
    from fastapi.testclient import TestClient

    from fhir_server.rest import interactions

    def boom(*a, **k):
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(interactions, "read_outcome", boom)
    with TestClient(app, raise_server_exceptions=False, headers=auth_headers) as c:
        r = c.get("/fhir/Patient/anything", headers={"X-Request-Id": "req-42"})
    assert r.status_code == 500
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "req-42" in r.json()["issue"][0]["diagnostics"]
