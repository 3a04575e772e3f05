"""Every interaction passes the authorisation seam: a refusing policy blocks each kind."""

from __future__ import annotations

import pytest

from fhir_server.security import authz


class RecordingPolicy:
    def __init__(self, refuse: str):
        self.refuse = refuse
        self.seen: list[str] = []

    def check(self, principal, request):
        self.seen.append(request.interaction)
        return "refused by test policy" if request.interaction.startswith(self.refuse) else None


@pytest.fixture
def rid(client):
    return client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]


@pytest.mark.parametrize(
    "refuse,method,path,body",
    [
        ("read", "GET", "/fhir/Patient/{rid}", None),
        ("vread", "GET", "/fhir/Patient/{rid}/_history/1", None),
        ("search-type", "GET", "/fhir/Patient?_id={rid}", None),
        ("search-system", "GET", "/fhir?_id={rid}", None),
        ("search-type", "GET", "/fhir/Patient/{rid}/Observation", None),
        ("history-instance", "GET", "/fhir/Patient/{rid}/_history", None),
        ("history-system", "GET", "/fhir/_history", None),
        ("create", "POST", "/fhir/Patient", {"resourceType": "Patient"}),
        ("update", "PUT", "/fhir/Patient/{rid}", {"resourceType": "Patient", "id": "{rid}"}),
        ("delete", "DELETE", "/fhir/Patient/{rid}", None),
        ("operation:everything", "GET", "/fhir/Patient/{rid}/$everything", None),
        ("create", "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]}),
    ],
)
def test_refusing_policy_blocks_interaction(client, rid, refuse, method, path, body):
    policy = RecordingPolicy(refuse)
    authz.set_policies([policy])
    try:
        if body is not None and "id" in body:
            body = {**body, "id": rid}
        r = client.request(method, path.format(rid=rid), json=body)
    finally:
        authz.set_policies([authz.AllowAll()])
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json()["issue"][0]["code"] == "forbidden"
    assert any(s.startswith(refuse) for s in policy.seen)
