"""Patient/$match: a national identifier match is certain; name and birth date are not."""

from __future__ import annotations

import uuid

from tests.identifiers.test_identifiers_http import PNR_OID, fresh_personnummer


def _match(client, patient: dict, **extra) -> dict:
    params = [{"name": "resource", "resource": patient}] + [
        {"name": k, ("valueBoolean" if isinstance(v, bool) else "valueInteger"): v} for k, v in extra.items()
    ]
    r = client.post("/fhir/Patient/$match", json={"resourceType": "Parameters", "parameter": params})
    assert r.status_code == 200, r.text
    return r.json()


def test_match_scores_identifier_certain_and_name_birthdate_probable(client):
    twelve, born = fresh_personnummer()
    family = f"Lindqvist{uuid.uuid4().hex[:5]}"
    by_id = client.post("/fhir/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": PNR_OID, "value": twelve}],
        "name": [{"family": "Other", "given": ["X"]}], "birthDate": born}).json()["id"]
    by_name = client.post("/fhir/Patient", json={
        "resourceType": "Patient", "name": [{"family": family, "given": ["Karin"]}], "birthDate": "1961-03-04"}).json()["id"]
    probe = {"resourceType": "Patient", "identifier": [{"system": "http://electronichealth.se/identifier/personnummer", "value": f"{twelve[2:8]}-{twelve[8:]}"}],
             "name": [{"family": family, "given": ["Karin"]}], "birthDate": "1961-03-04"}
    bundle = _match(client, probe)
    got = {e["resource"]["id"]: (e["search"]["score"], e["search"]["extension"][0]["valueCode"]) for e in bundle["entry"]}
    assert got[by_id] == (1.0, "certain")
    assert got[by_name] == (0.8, "probable")
    assert bundle["entry"][0]["resource"]["id"] == by_id
    only = _match(client, probe, onlyCertainMatches=True)
    assert [e["resource"]["id"] for e in only["entry"]] == [by_id]


def test_match_needs_a_patient(client):
    r = client.post("/fhir/Patient/$match", json={"resourceType": "Parameters", "parameter": []})
    assert r.status_code == 400
