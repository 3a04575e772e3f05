"""HTTP tests for create, read, vread, update, delete, versioning and headers."""

from __future__ import annotations

import uuid

import orjson

FHIR = "application/fhir+json"


def _patient(**extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": "Nilsson", "given": ["Astrid"]}], **extra}


def test_create_assigns_id_and_version(client):
    r = client.post("/fhir/Patient", json=_patient(), headers={"Content-Type": FHIR})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] and body["meta"]["versionId"] == "1"
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert "Last-Modified" in r.headers
    assert r.headers["content-type"].startswith("application/fhir+json")


def test_create_ignores_client_id(client):
    r = client.post("/fhir/Patient", json=_patient(id="client-chosen"))
    assert r.status_code == 201
    assert r.json()["id"] != "client-chosen"


def test_read_returns_stored_bytes_with_decimal_precision(client):
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight", "coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "valueQuantity": {"value": 72.50, "unit": "kg"},
        "note": [{"text": "Ångström, Łódź, Søren — 测试"}],
    }
    raw = orjson.dumps(obs).replace(b"72.5", b"72.50")
    r = client.post("/fhir/Observation", content=raw, headers={"Content-Type": FHIR})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    got = client.get(f"/fhir/Observation/{rid}")
    assert got.status_code == 200
    assert b'"value":72.50' in got.content
    assert "Ångström, Łódź, Søren — 测试" in got.text


def test_read_unknown_is_404_operation_outcome(client):
    r = client.get("/fhir/Patient/does-not-exist")
    assert r.status_code == 404
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["code"] == "not-found"


def test_unknown_type_is_404(client):
    r = client.get("/fhir/Spaceship/1")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


def test_update_versions_and_vread(client):
    rid = client.post("/fhir/Patient", json=_patient()).json()["id"]
    r = client.put(f"/fhir/Patient/{rid}", json=_patient(id=rid, gender="female"))
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["versionId"] == "2"
    assert r.headers["ETag"] == 'W/"2"'
    v1 = client.get(f"/fhir/Patient/{rid}/_history/1")
    assert v1.status_code == 200 and "gender" not in v1.json()
    v2 = client.get(f"/fhir/Patient/{rid}/_history/2")
    assert v2.json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{rid}/_history/9").status_code == 404


def test_update_as_create_with_client_id(client):
    rid = f"pat-{uuid.uuid4().hex[:12]}"
    r = client.put(f"/fhir/Patient/{rid}", json=_patient(id=rid))
    assert r.status_code == 201
    assert r.json()["id"] == rid
    assert r.headers["Location"].endswith(f"/Patient/{rid}/_history/1")


def test_update_id_mismatch_is_400(client):
    rid = client.post("/fhir/Patient", json=_patient()).json()["id"]
    r = client.put(f"/fhir/Patient/{rid}", json=_patient(id="other"))
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Patient.id"]


def test_type_mismatch_is_400(client):
    r = client.post("/fhir/Observation", json=_patient())
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_if_match_stale_version_is_412_and_writes_nothing(client):
    rid = client.post("/fhir/Patient", json=_patient()).json()["id"]
    client.put(f"/fhir/Patient/{rid}", json=_patient(id=rid, gender="male"))
    r = client.put(f"/fhir/Patient/{rid}", json=_patient(id=rid, gender="other"), headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    cur = client.get(f"/fhir/Patient/{rid}").json()
    assert cur["meta"]["versionId"] == "2" and cur["gender"] == "male"
    ok = client.put(f"/fhir/Patient/{rid}", json=_patient(id=rid, gender="other"), headers={"If-Match": 'W/"2"'})
    assert ok.status_code == 200


def test_conditional_read_headers(client):
    r = client.post("/fhir/Patient", json=_patient())
    rid, etag, modified = r.json()["id"], r.headers["ETag"], r.headers["Last-Modified"]
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": etag}).status_code == 304
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": 'W/"7"'}).status_code == 200
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200


def test_delete_then_gone_and_history_keeps_tombstone(client):
    rid = client.post("/fhir/Patient", json=_patient()).json()["id"]
    d = client.delete(f"/fhir/Patient/{rid}")
    assert d.status_code in (200, 204)
    assert client.get(f"/fhir/Patient/{rid}").status_code == 410
    h = client.get(f"/fhir/Patient/{rid}/_history").json()
    assert h["type"] == "history" and h["total"] == 2
    assert h["entry"][0]["request"]["method"] == "DELETE" and "resource" not in h["entry"][0]
    assert h["entry"][1]["resource"]["id"] == rid
    # deleting again changes nothing
    assert client.delete(f"/fhir/Patient/{rid}").status_code == 204
    # and it can be brought back by an update
    back = client.put(f"/fhir/Patient/{rid}", json=_patient(id=rid))
    assert back.status_code == 201 and back.json()["meta"]["versionId"] == "3"


def test_delete_unknown_is_404(client):
    assert client.delete("/fhir/Patient/never-was").status_code == 404


def test_prefer_return(client):
    r = client.post("/fhir/Patient", json=_patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and r.headers["Location"]
    r = client.post("/fhir/Patient", json=_patient(), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.json()["resourceType"] == "OperationOutcome"
    r = client.post("/fhir/Patient", json=_patient(), headers={"Prefer": "return=representation"})
    assert r.json()["resourceType"] == "Patient"


def test_format_and_accept(client):
    rid = client.post("/fhir/Patient", json=_patient()).json()["id"]
    r = client.get(f"/fhir/Patient/{rid}", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    r = client.get(f"/fhir/Patient/{rid}?_format=json&_pretty=true")
    assert r.status_code == 200 and b"\n  " in r.content
    r = client.get(f"/fhir/Patient/{rid}?_format=xml")
    assert r.status_code == 406 and r.json()["resourceType"] == "OperationOutcome"


def test_summary_and_elements_on_read(client):
    rid = client.post(
        "/fhir/Patient",
        json=_patient(gender="female", text={"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}, maritalStatus={"text": "single"}),
    ).json()["id"]
    s = client.get(f"/fhir/Patient/{rid}?_summary=true").json()
    assert "name" in s and "maritalStatus" not in s and "text" not in s
    assert any(t["code"] == "SUBSETTED" for t in s["meta"]["tag"])
    e = client.get(f"/fhir/Patient/{rid}?_elements=gender").json()
    assert e["gender"] == "female" and "name" not in e and e["id"] == rid
    assert client.get(f"/fhir/Patient/{rid}?_summary=bogus").status_code == 400


def test_malformed_json_is_400(client):
    r = client.post("/fhir/Patient", content=b'{"resourceType": "Patient",', headers={"Content-Type": FHIR})
    assert r.status_code == 400
    assert r.json()["issue"][0]["code"] in ("structure", "invalid")


def test_unsupported_content_type_is_415(client):
    r = client.post("/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 415


def test_metadata_lists_types_and_version(client):
    cs = client.get("/fhir/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert "Patient" in types and "Appointment" in types and "QuestionnaireResponse" in types
    assert {"read", "create", "search-type"} <= {i["code"] for i in types["Patient"]["interaction"]}
    assert any(p["name"] == "identifier" for p in types["Patient"]["searchParam"])
