"""A resource that moved between Patient compartments (filed under the wrong patient, then
corrected) keeps the first patient's data in its earlier versions: a compartment-restricted
caller sees only the versions inside its compartments (security.versions)."""

from __future__ import annotations

from ..conftest import make_token


def _moved(client) -> tuple[str, str, str]:
    me = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    other = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "hb"}}
    oid = client.post("/fhir/Observation", json={**body, "subject": {"reference": f"Patient/{other}"},
                                                 "valueString": "OTHER-PATIENT-DATA"}).json()["id"]
    r = client.put(f"/fhir/Observation/{oid}", json={**body, "id": oid, "subject": {"reference": f"Patient/{me}"}, "valueString": "mine"})
    assert r.status_code == 200
    return me, other, oid


def test_earlier_versions_of_another_compartment_are_not_shown(client, anonymous_client):
    me, _other, oid = _moved(client)
    mine = {"Authorization": f"Bearer {make_token('patient/*.rs', patient=me)}"}
    assert anonymous_client.get(f"/fhir/Observation/{oid}", headers=mine).status_code == 200
    assert anonymous_client.get(f"/fhir/Observation/{oid}/_history/2", headers=mine).status_code == 200
    r = anonymous_client.get(f"/fhir/Observation/{oid}/_history/1", headers=mine)
    assert r.status_code == 404 and "OTHER-PATIENT-DATA" not in r.text
    for path in (f"/fhir/Observation/{oid}/_history", "/fhir/Observation/_history?_count=1000"):
        bundle = anonymous_client.get(path, headers=mine).json()
        assert "OTHER-PATIENT-DATA" not in str(bundle) and "total" not in bundle
        assert any(e["response"]["etag"] == 'W/"2"' and e["fullUrl"].endswith(f"/Observation/{oid}") for e in bundle["entry"])
    # a system token still sees every version, with the total
    bundle = client.get(f"/fhir/Observation/{oid}/_history").json()
    assert bundle["total"] == 2 and "OTHER-PATIENT-DATA" in str(bundle)
    assert client.get(f"/fhir/Observation/{oid}/_history/1").status_code == 200


def test_paging_a_filtered_history_goes_on_past_hidden_versions(client, anonymous_client):
    me, _other, oid = _moved(client)
    mine = {"Authorization": f"Bearer {make_token('patient/*.rs', patient=me)}"}
    first = anonymous_client.get(f"/fhir/Observation/{oid}/_history?_count=1", headers=mine).json()
    seen = [e["response"]["etag"] for e in first["entry"]]
    nxt = [link["url"] for link in first["link"] if link["relation"] == "next"]
    while nxt:
        page = anonymous_client.get(nxt[0].replace("http://testserver", ""), headers=mine).json()
        seen += [e["response"]["etag"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert seen == ['W/"2"']


def test_a_version_naming_me_by_this_servers_absolute_url_is_mine(client, anonymous_client):
    """An absolute reference to this server's own base is local, for a version as for the index."""
    me = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "hb"}}
    oid = client.post("/fhir/Observation", json={**body, "subject": {"reference": f"http://testserver/fhir/Patient/{me}"}}).json()["id"]
    client.put(f"/fhir/Observation/{oid}", json={**body, "id": oid, "subject": {"reference": f"Patient/{me}"}})
    mine = {"Authorization": f"Bearer {make_token('patient/*.rs', patient=me)}"}
    assert anonymous_client.get(f"/fhir/Observation/{oid}/_history/1", headers=mine).status_code == 200
    etags = [e["response"]["etag"] for e in anonymous_client.get(f"/fhir/Observation/{oid}/_history", headers=mine).json()["entry"]]
    assert etags == ['W/"2"', 'W/"1"']
