"""PATCH over HTTP in the three formats, and what a bad patch leaves behind."""

from __future__ import annotations

import orjson


def _new(client) -> str:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "active": True, "name": [{"family": "Kowalski"}]})
    return r.json()["id"]


def test_json_patch(client):
    rid = _new(client)
    ops = [{"op": "replace", "path": "/active", "value": False}, {"op": "add", "path": "/gender", "value": "male"}]
    r = client.patch(f"/fhir/Patient/{rid}", content=orjson.dumps(ops), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["active"] is False and body["gender"] == "male" and body["meta"]["versionId"] == "2"


def test_merge_patch_and_plain_json_object(client):
    rid = _new(client)
    r = client.patch(f"/fhir/Patient/{rid}", json={"gender": "female", "active": None}, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "female" and "active" not in r.json()
    r = client.patch(f"/fhir/Patient/{rid}", content=orjson.dumps({"birthDate": "1980-02-03"}), headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["birthDate"] == "1980-02-03"


def test_fhirpath_patch(client):
    rid = _new(client)
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "operation", "part": [
                {"name": "type", "valueCode": "replace"},
                {"name": "path", "valueString": "Patient.name[0].family"},
                {"name": "value", "valueString": "Nowak"},
            ]}
        ],
    }
    r = client.patch(f"/fhir/Patient/{rid}", json=params, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    assert r.json()["name"][0]["family"] == "Nowak"


def test_patch_producing_invalid_resource_is_422_and_stores_nothing(client):
    rid = _new(client)
    ops = [{"op": "replace", "path": "/active", "value": "yes"}]
    r = client.patch(f"/fhir/Patient/{rid}", content=orjson.dumps(ops), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    assert client.get(f"/fhir/Patient/{rid}").json()["meta"]["versionId"] == "1"


def test_patch_failed_test_op_is_422(client):
    rid = _new(client)
    ops = [{"op": "test", "path": "/active", "value": False}, {"op": "remove", "path": "/name"}]
    r = client.patch(f"/fhir/Patient/{rid}", content=orjson.dumps(ops), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    assert client.get(f"/fhir/Patient/{rid}").json()["name"][0]["family"] == "Kowalski"


def test_patch_with_stale_if_match_is_412(client):
    rid = _new(client)
    ops = [{"op": "add", "path": "/gender", "value": "male"}]
    r = client.patch(
        f"/fhir/Patient/{rid}", content=orjson.dumps(ops), headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"5"'}
    )
    assert r.status_code == 412


def test_patch_unknown_content_type_is_415(client):
    rid = _new(client)
    r = client.patch(f"/fhir/Patient/{rid}", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_patch_may_not_change_id(client):
    rid = _new(client)
    ops = [{"op": "replace", "path": "/id", "value": "other"}]
    r = client.patch(f"/fhir/Patient/{rid}", content=orjson.dumps(ops), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
