"""History at instance, type and system level: _since, _at, _count and paging."""

from __future__ import annotations

import time
import uuid


def _mk(client, rtype="Basic") -> str:
    return client.post(f"/fhir/{rtype}", json={"resourceType": rtype, "code": {"text": uuid.uuid4().hex}}).json()["id"]


def test_instance_history_newest_first_with_paging(client):
    rid = _mk(client)
    for i in range(4):
        client.put(f"/fhir/Basic/{rid}", json={"resourceType": "Basic", "id": rid, "code": {"text": f"v{i + 2}"}})
    page = client.get(f"/fhir/Basic/{rid}/_history?_count=2").json()
    assert page["total"] == 5
    versions = [e["resource"]["meta"]["versionId"] for e in page["entry"]]
    assert versions == ["5", "4"]
    seen = list(versions)
    while True:
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert nxt[0].startswith("http://testserver/fhir/Basic/")
        page = client.get(nxt[0].replace("http://testserver", "")).json()
        seen += [e["resource"]["meta"]["versionId"] for e in page["entry"]]
    assert seen == ["5", "4", "3", "2", "1"]
    assert page["entry"][-1]["request"]["method"] == "POST"


def test_type_history_since(client):
    before = client.get("/fhir/Basic/_history?_count=0").json()["total"]
    time.sleep(0.01)
    cut = client.post("/fhir/Basic", json={"resourceType": "Basic", "code": {"text": "cut"}}).json()["meta"]["lastUpdated"]
    _mk(client)
    since = client.get(f"/fhir/Basic/_history?_since={cut}").json()
    assert since["total"] == 2
    assert client.get("/fhir/Basic/_history?_count=0").json()["total"] == before + 2


def test_history_at_returns_versions_current_then(client):
    rid = _mk(client)
    first = client.get(f"/fhir/Basic/{rid}").json()["meta"]["lastUpdated"]
    time.sleep(0.01)
    client.put(f"/fhir/Basic/{rid}", json={"resourceType": "Basic", "id": rid, "code": {"text": "later"}})
    at = client.get(f"/fhir/Basic/{rid}/_history?_at={first}").json()
    assert [e["resource"]["meta"]["versionId"] for e in at["entry"]] == ["1"]


def test_system_history_and_bad_parameters(client):
    rid = _mk(client)
    sys_hist = client.get("/fhir/_history?_count=5").json()
    assert sys_hist["type"] == "history" and len(sys_hist["entry"]) == 5
    assert any(e["fullUrl"].endswith(f"/Basic/{rid}") for e in sys_hist["entry"])
    assert client.get("/fhir/_history?_since=yesterday").status_code == 400
    assert client.get("/fhir/_history?_count=-1").status_code == 400
    assert client.get("/fhir/Basic/nope/_history").status_code == 404
