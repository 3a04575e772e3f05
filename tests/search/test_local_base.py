"""References to this server's own base, in absolute form, are the same reference as the
relative form (references.html#literal): every search form agrees on them."""

from __future__ import annotations

import uuid

import httpx
import pytest

from fhir_server.search import local_base


@pytest.fixture
def alias():
    local_base.configure(["https://Public.Example.org:443/fhir/"])
    yield "https://public.example.org/fhir"
    local_base.configure([])


def _obs(client, ref: str, headers=None, url: str = "/fhir/Observation") -> str:
    r = client.post(url, headers=headers or {}, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "local-base"}, "subject": {"reference": ref}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _ids(client, url: str, rtype: str = "Observation") -> set[str]:
    r = client.get(url)
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", []) if e["resource"]["resourceType"] == rtype}


def test_every_search_form_agrees_on_absolute_references_to_own_base(client, alias, live_server, auth_headers):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    mine = {
        _obs(client, f"Patient/{pid}"),
        _obs(client, f"http://testserver/fhir/Patient/{pid}"),
        _obs(client, f"HTTP://TESTSERVER:80/fhir/Patient/{pid}/_history/1"),
        _obs(client, f"{alias}/Patient/{pid}"),
    }
    # through a (trusted, loopback) proxy that says how the client reached the server
    with httpx.Client(headers=auth_headers) as proxy:
        mine.add(_obs(proxy, f"https://proxy.example.org/pre/fhir/Patient/{pid}", url=f"{live_server}/Observation",
                      headers={"X-Forwarded-Host": "proxy.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/pre"}))
    # an untrusted client cannot make a foreign base "ours"
    spoofed = _obs(client, f"https://spoof.example.org/fhir/Patient/{pid}", headers={"X-Forwarded-Host": "spoof.example.org"})
    foreign = _obs(client, f"http://other.example.org/fhir/Patient/{pid}")
    for q in (f"subject={pid}", f"subject=Patient/{pid}", f"patient={pid}", f"subject:Patient={pid}",
              f"subject=http://testserver/fhir/Patient/{pid}", f"subject={alias}/Patient/{pid}"):
        assert _ids(client, f"/fhir/Observation?{q}&code:text=local-base&_count=100") == mine, q
    assert _ids(client, f"/fhir/Observation?subject=http://other.example.org/fhir/Patient/{pid}") == {foreign}
    assert spoofed not in _ids(client, f"/fhir/Observation?subject={pid}&_count=100")
    # compartment search, _revinclude, _include, $everything
    assert _ids(client, f"/fhir/Patient/{pid}/Observation?_count=100") == mine
    assert _ids(client, f"/fhir/Patient?_id={pid}&_revinclude=Observation:subject&_count=100") == mine
    inc = client.get(f"/fhir/Observation?patient={pid}&_include=Observation:subject&_count=100").json()
    assert [e["resource"]["id"] for e in inc["entry"] if e["resource"]["resourceType"] == "Patient"] == [pid]
    assert _ids(client, f"/fhir/Patient/{pid}/$everything?_count=100") == mine
    # the stored text stays as sent
    for oid in mine:
        ref = client.get(f"/fhir/Observation/{oid}").json()["subject"]["reference"]
        assert ref.endswith(f"Patient/{pid}") or ref.endswith("/_history/1")


def test_local_form_unit():
    local_base.configure(["https://a.example/fhir"])
    try:
        assert local_base.local_form("https://A.example:443/fhir/Patient/1") == "Patient/1"
        assert local_base.local_form("https://a.example/fhirx/Patient/1") is None
        assert local_base.local_form("https://a.example/fhir/Patient?x=1") is None
        assert local_base.local_form("Patient/1") is None
        with local_base.serving("http://127.0.0.1:8080/fhir"):
            assert local_base.local_form("http://127.0.0.1:8080/fhir/Patient/2") == "Patient/2"
        assert local_base.local_form("http://127.0.0.1:8080/fhir/Patient/2") is None
    finally:
        local_base.configure([])
