"""$meta, $meta-add, $meta-delete (resource-operations.html): sets of profiles, tags and
security labels; add/delete change the current version in place."""

from __future__ import annotations

import uuid


def _params(meta: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": meta}]}


def _ret(r) -> dict:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Parameters" and body["parameter"][0]["name"] == "return"
    return body["parameter"][0]["valueMeta"]


def test_meta_add_and_delete_in_place(client):
    mark = uuid.uuid4().hex[:8]
    rid = client.post("/fhir/Basic", json={"resourceType": "Basic", "code": {"text": "m"},
                                          "meta": {"tag": [{"system": "urn:t", "code": "a"}]}}).json()["id"]
    before = client.get(f"/fhir/Basic/{rid}").json()["meta"]
    meta = _ret(client.post(f"/fhir/Basic/{rid}/$meta-add", json=_params({
        "profile": ["http://example.org/p"],
        "tag": [{"system": "urn:t", "code": "a", "display": "dup ignored"}, {"system": "urn:t", "code": mark}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]})))
    assert meta["versionId"] == before["versionId"] == "1" and meta["lastUpdated"] == before["lastUpdated"]
    assert [t["code"] for t in meta["tag"]] == ["a", mark]
    assert meta["profile"] == ["http://example.org/p"] and meta["security"][0]["code"] == "R"
    # no new version; stored and searchable
    assert len(client.get(f"/fhir/Basic/{rid}/_history").json()["entry"]) == 1
    assert client.get(f"/fhir/Basic/{rid}").json()["meta"]["tag"][1]["code"] == mark
    assert client.get(f"/fhir/Basic/{rid}/_history/1").json()["meta"]["tag"][1]["code"] == mark
    assert client.get(f"/fhir/Basic?_tag=urn:t|{mark}").json()["total"] == 1
    assert client.get(f"/fhir/Basic?_id={rid}&_profile=http://example.org/p").json()["total"] == 1
    assert _ret(client.get(f"/fhir/Basic/{rid}/$meta"))["tag"][1]["code"] == mark
    # type and system level: in use
    assert {"system": "urn:t", "code": mark} in _ret(client.get("/fhir/Basic/$meta"))["tag"]
    system = _ret(client.get("/fhir/$meta"))
    assert {"system": "urn:t", "code": mark} in system["tag"] and "http://example.org/p" in system["profile"]
    assert {"system": "urn:t", "code": mark} not in _ret(client.get("/fhir/Patient/$meta")).get("tag", [])
    # delete: absent ones are no error
    meta = _ret(client.post(f"/fhir/Basic/{rid}/$meta-delete", json=_params({
        "tag": [{"system": "urn:t", "code": mark}, {"system": "urn:t", "code": "never"}], "profile": ["http://example.org/p"]})))
    assert [t["code"] for t in meta["tag"]] == ["a"] and "profile" not in meta and meta["versionId"] == "1"
    assert client.get(f"/fhir/Basic?_tag=urn:t|{mark}").json()["total"] == 0


def test_meta_errors(client):
    rid = client.post("/fhir/Basic", json={"resourceType": "Basic", "code": {"text": "m"}}).json()["id"]
    assert client.post(f"/fhir/Basic/{rid}/$meta-add", json={"resourceType": "Parameters"}).status_code == 400
    assert client.post(f"/fhir/Basic/{rid}/$meta-add", json=_params({"tag": [{"system": "x"}]})).status_code == 400
    assert client.post(f"/fhir/Basic/{rid}/$meta-add", json=_params({"profile": [3]})).status_code == 400
    assert client.post(f"/fhir/Basic/{rid}/$meta-add", content=b"not json",
                       headers={"Content-Type": "application/fhir+json"}).status_code == 400
    assert client.post("/fhir/Basic/nope/$meta-add", json=_params({"tag": [{"code": "x"}]})).status_code == 404
    assert client.get("/fhir/Basic/nope/$meta").status_code == 404
    client.delete(f"/fhir/Basic/{rid}")
    assert client.get(f"/fhir/Basic/{rid}/$meta").status_code == 410
    assert client.post(f"/fhir/Basic/{rid}/$meta-delete", json=_params({"tag": [{"code": "x"}]})).status_code == 410
    assert client.get(f"/fhir/Basic/{rid}/$meta-add").status_code == 405
