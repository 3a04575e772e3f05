"""Conditional create, update, patch and delete: the spec's 0/1/many outcomes."""

from __future__ import annotations

import threading
import uuid

import orjson


def _pat(mark: str, **extra) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:cc", "value": mark}], **extra}


def test_conditional_create(client):
    mark = uuid.uuid4().hex
    h = {"If-None-Exist": f"identifier=urn:cc|{mark}"}
    a = client.post("/fhir/Patient", json=_pat(mark), headers=h)
    assert a.status_code == 201
    b = client.post("/fhir/Patient", json=_pat(mark), headers=h)
    assert b.status_code == 200 and b.json()["id"] == a.json()["id"]
    client.post("/fhir/Patient", json=_pat(mark))
    c = client.post("/fhir/Patient", json=_pat(mark), headers=h)
    assert c.status_code == 412


def test_conditional_create_is_race_free(app, auth_headers):
    from fastapi.testclient import TestClient

    mark = uuid.uuid4().hex
    results: list[int] = []

    def worker():
        with TestClient(app, headers=auth_headers) as c:
            r = c.post("/fhir/Patient", json=_pat(mark), headers={"If-None-Exist": f"identifier=urn:cc|{mark}"})
            results.append(r.status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with TestClient(app, headers=auth_headers) as c:
        total = c.get(f"/fhir/Patient?identifier=urn:cc|{mark}&_summary=count").json()["total"]
    assert total == 1
    assert sorted(results).count(201) == 1 and all(s in (200, 201) for s in results)


def test_conditional_update(client):
    mark = uuid.uuid4().hex
    r = client.put(f"/fhir/Patient?identifier=urn:cc|{mark}", json=_pat(mark, gender="male"))
    assert r.status_code == 201
    rid = r.json()["id"]
    r = client.put(f"/fhir/Patient?identifier=urn:cc|{mark}", json=_pat(mark, gender="female"))
    assert r.status_code == 200 and r.json()["id"] == rid and r.json()["meta"]["versionId"] == "2"
    client.post("/fhir/Patient", json=_pat(mark))
    assert client.put(f"/fhir/Patient?identifier=urn:cc|{mark}", json=_pat(mark)).status_code == 412


def test_conditional_patch_and_delete(client):
    mark = uuid.uuid4().hex
    rid = client.post("/fhir/Patient", json=_pat(mark)).json()["id"]
    ops = orjson.dumps([{"op": "add", "path": "/gender", "value": "unknown"}])
    r = client.patch(f"/fhir/Patient?identifier=urn:cc|{mark}", content=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["gender"] == "unknown"
    r = client.delete(f"/fhir/Patient?identifier=urn:cc|{mark}")
    assert r.status_code in (200, 204)
    assert client.get(f"/fhir/Patient/{rid}").status_code == 410
    assert client.delete(f"/fhir/Patient?identifier=urn:cc|{mark}").status_code == 204


def test_conditional_delete_multiple_is_412(client):
    mark = uuid.uuid4().hex
    client.post("/fhir/Patient", json=_pat(mark))
    client.post("/fhir/Patient", json=_pat(mark))
    assert client.delete(f"/fhir/Patient?identifier=urn:cc|{mark}").status_code == 412


def test_conditional_without_criteria_is_400(client):
    assert client.delete("/fhir/Patient").status_code == 400


def test_concurrent_update_as_create_never_500(app, auth_headers):
    """Racing PUTs that create the same id: one creates, the others update or
    get a clean 409; none fails with a 500 and exactly one version 1 exists."""
    from fastapi.testclient import TestClient

    rid = f"race-{uuid.uuid4().hex[:12]}"
    statuses: list[int] = []

    def worker():
        with TestClient(app, headers=auth_headers) as c:
            r = c.put(f"/fhir/Patient/{rid}", json={"resourceType": "Patient", "id": rid})
            statuses.append(r.status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(201) == 1, statuses
    assert all(s in (200, 201, 409) for s in statuses), statuses
    with TestClient(app, headers=auth_headers) as c:
        hist = c.get(f"/fhir/Patient/{rid}/_history").json()
    versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in hist["entry"])
    assert versions == list(range(1, len(versions) + 1))
