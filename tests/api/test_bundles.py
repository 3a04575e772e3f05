"""Transaction and batch Bundles: atomicity, order, references, conditionals."""

from __future__ import annotations

import uuid


def _count(client, rtype: str, **params) -> int:
    q = "&".join(f"{k}={v}" for k, v in params.items())
    return client.get(f"/fhir/{rtype}?{q}&_summary=count").json()["total"]


def _tx(entries, kind="transaction"):
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_transaction_resolves_urn_uuid_references_everywhere(client):
    pid, eid = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    mark = uuid.uuid4().hex[:10]
    bundle = _tx([
        {"fullUrl": eid, "resource": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": pid}},
         "request": {"method": "POST", "url": "Encounter"}},
        {"fullUrl": pid, "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": mark}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": pid}, "encounter": {"reference": eid},
                      "extension": [{"url": "http://example.org/ext", "valueReference": {"reference": pid}}],
                      "contained": [{"resourceType": "Provenance", "id": "p1", "recorded": "2024-01-01T00:00:00Z",
                                     "target": [{"reference": pid}], "agent": [{"who": {"reference": pid}}]}]},
         "request": {"method": "POST", "url": "Observation"}},
    ])
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in resp["entry"]]
    assert statuses == ["201 Created"] * 3
    patient_loc = resp["entry"][1]["response"]["location"]
    patient_ref = "/".join(patient_loc.split("/")[:2])
    obs = client.get("/fhir/" + "/".join(resp["entry"][2]["response"]["location"].split("/")[:2])).json()
    assert obs["subject"]["reference"] == patient_ref
    assert obs["extension"][0]["valueReference"]["reference"] == patient_ref
    assert obs["contained"][0]["target"][0]["reference"] == patient_ref
    assert obs["encounter"]["reference"].startswith("Encounter/")


def test_transaction_rolls_back_everything_on_error(client):
    mark = uuid.uuid4().hex[:10]
    bundle = _tx([
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:rollback", "value": mark}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "active": "not-a-boolean"}, "request": {"method": "POST", "url": "Patient"}},
    ])
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 400
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in oo["issue"][0]["diagnostics"]
    assert any(e.startswith("Bundle.entry[1]") for e in oo["issue"][0]["expression"])
    assert _count(client, "Patient", identifier=f"urn:rollback|{mark}") == 0


def test_transaction_processing_order_delete_before_create(client):
    rid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    mark = uuid.uuid4().hex[:10]
    bundle = _tx([
        {"request": {"method": "GET", "url": f"Patient?identifier=urn:order|{mark}"}},
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:order", "value": mark}]}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": f"Patient/{rid}"}},
    ])
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    # GET runs last, so it sees the created patient; response order is the request order
    assert entries[0]["resource"]["total"] == 1
    assert entries[1]["response"]["status"] == "201 Created"
    assert entries[2]["response"]["status"] in ("200 OK", "204 No Content")
    assert client.get(f"/fhir/Patient/{rid}").status_code == 410


def test_conditional_reference_and_if_none_exist(client):
    mark = uuid.uuid4().hex[:10]
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:cond", "value": mark}]}).json()["id"]
    bundle = _tx([
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:cond", "value": mark}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:cond|{mark}"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": f"Patient?identifier=urn:cond|{mark}"}},
         "request": {"method": "POST", "url": "Observation"}},
    ])
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    e = r.json()["entry"]
    assert e[0]["response"]["status"] == "200 OK"
    obs = client.get("/fhir/" + "/".join(e[1]["response"]["location"].split("/")[:2])).json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"


def test_ambiguous_conditional_reference_is_412(client):
    mark = uuid.uuid4().hex[:10]
    for _ in range(2):
        client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:amb", "value": mark}]})
    bundle = _tx([
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": f"Patient?identifier=urn:amb|{mark}"}},
         "request": {"method": "POST", "url": "Observation"}},
    ])
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 412
    assert "Bundle.entry[0]" in r.json()["issue"][0]["diagnostics"]


def test_batch_entries_are_independent(client):
    mark = uuid.uuid4().hex[:10]
    bundle = _tx([
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:batch", "value": mark}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "active": "nope"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
    ], kind="batch")
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200
    e = r.json()["entry"]
    assert e[0]["response"]["status"] == "201 Created"
    assert e[1]["response"]["status"] == "400" and e[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert e[2]["response"]["status"] == "404"
    assert _count(client, "Patient", identifier=f"urn:batch|{mark}") == 1


def test_conditional_update_and_put_in_transaction(client):
    mark = uuid.uuid4().hex[:10]
    bundle = _tx([
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:cu", "value": mark}], "gender": "male"},
         "request": {"method": "PUT", "url": f"Patient?identifier=urn:cu|{mark}"}},
    ])
    first = client.post("/fhir", json=bundle).json()["entry"][0]["response"]
    assert first["status"] == "201 Created"
    bundle["entry"][0]["resource"]["gender"] = "female"
    second = client.post("/fhir", json=bundle).json()["entry"][0]["response"]
    assert second["status"] == "200 OK"
    assert second["location"].split("/")[1] == first["location"].split("/")[1]


def test_bundle_type_and_limits(client, settings):
    assert client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert client.post("/fhir", json={"resourceType": "Patient"}).status_code == 400
    too_many = _tx([{"request": {"method": "GET", "url": "Patient"}}] * (settings.max_bundle_entries + 1), kind="batch")
    assert client.post("/fhir", json=too_many).status_code == 413


def test_prefer_representation_returns_resources(client):
    bundle = _tx([{"resource": {"resourceType": "Patient", "gender": "other"}, "request": {"method": "POST", "url": "Patient"}}])
    r = client.post("/fhir", json=bundle, headers={"Prefer": "return=representation"})
    assert r.json()["entry"][0]["resource"]["gender"] == "other"
