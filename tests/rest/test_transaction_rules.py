"""Transaction rules of http://hl7.org/fhir/R4/http.html#trules: GET entries carry their
resource, one entry per resource, fullUrl replacement in every uri-typed element and the
narrative, no dangling urn:uuid references; concurrent transactions never answer 500."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest


def _tx(entries, kind="transaction"):
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _put(pid, **extra):
    return {"resource": {"resourceType": "Patient", "id": pid, **extra}, "request": {"method": "PUT", "url": f"Patient/{pid}"}}


def _versions(client, pid) -> int:
    return len(client.get(f"/fhir/Patient/{pid}/_history").json().get("entry", []))


# ----------------------------------------------------------------------------- GET entries


def test_transaction_get_entry_carries_resource_as_after_the_writes(client):
    pid = f"tx-get-{uuid.uuid4().hex[:8]}"
    client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": False})
    r = client.post("/fhir", json=_tx([
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        _put(pid, active=True),
    ]))
    assert r.status_code == 200, r.text
    got = r.json()["entry"][0]
    assert got["response"]["status"] == "200 OK"
    assert got["resource"]["id"] == pid
    assert got["resource"]["active"] is True  # GETs run after the writes
    assert got["resource"]["meta"]["versionId"] == "2"


def test_batch_get_entry_carries_resource_without_prefer(client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}).json()["id"]
    r = client.post("/fhir", json=_tx([
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}/_history/1"}},
    ], "batch"))
    assert r.status_code == 200, r.text
    for entry in r.json()["entry"]:
        assert entry["resource"]["id"] == pid
        assert entry["resource"]["gender"] == "female"


# ----------------------------------------------------------------------------- one entry per resource


@pytest.mark.parametrize("second", [
    lambda pid: _put(pid, active=False),
    lambda pid: {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
    lambda pid: {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                              "data": "W3sib3AiOiJhZGQiLCJwYXRoIjoiL2dlbmRlciIsInZhbHVlIjoibWFsZSJ9XQ=="},
                 "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
], ids=["put-put", "put-delete", "put-patch"])
def test_two_entries_on_one_resource_fail_as_a_whole(client, second):
    pid = f"tx-dup-{uuid.uuid4().hex[:8]}"
    client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid})
    other = f"tx-other-{uuid.uuid4().hex[:8]}"
    r = client.post("/fhir", json=_tx([_put(other), _put(pid, active=True), second(pid)]))
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert "Bundle.entry[1]" in issue["diagnostics"] and "Bundle.entry[2]" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[1]", "Bundle.entry[2]"]
    assert _versions(client, pid) == 1
    assert client.get(f"/fhir/Patient/{other}").status_code == 404


def test_conditional_update_meeting_another_entry_fails(client):
    mark = uuid.uuid4().hex[:10]
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:cu", "value": mark}]}).json()["id"]
    r = client.post("/fhir", json=_tx([
        _put(pid, active=True),
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:cu", "value": mark}], "active": False},
         "request": {"method": "PUT", "url": f"Patient?identifier=urn:cu|{mark}"}},
    ]))
    assert r.status_code == 400, r.text
    assert "Bundle.entry[0]" in r.json()["issue"][0]["diagnostics"]
    assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    assert _versions(client, pid) == 1


def test_two_conditional_creates_with_same_criteria_fail(client):
    mark = uuid.uuid4().hex[:10]
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:cc", "value": mark}]}
    entry = {"resource": body, "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:cc|{mark}"}}
    r = client.post("/fhir", json=_tx([entry, dict(entry)]))
    assert r.status_code == 400, r.text
    assert client.get(f"/fhir/Patient?identifier=urn:cc|{mark}").json()["total"] == 0


# ----------------------------------------------------------------------------- fullUrl replacement


def test_urn_uuid_replaced_in_uri_elements_and_narrative_not_canonical(client):
    bin_url, pat_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    oid_url = "urn:oid:1.2.3.4." + str(uuid.uuid4().int % 10**8)
    canonical = f"urn:uuid:{uuid.uuid4()}"
    div = (f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{pat_url}">patient</a> '
           f'<img src="{bin_url}"/> <a href="{canonical}">other</a></div>')
    r = client.post("/fhir", json=_tx([
        {"fullUrl": bin_url, "resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="},
         "request": {"method": "POST", "url": "Binary"}},
        {"fullUrl": pat_url, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": oid_url, "resource": {"resourceType": "Organization", "name": "x"}, "request": {"method": "POST", "url": "Organization"}},
        {"resource": {
            "resourceType": "DocumentReference", "status": "current",
            "date": "2024-05-01T10:00:00Z",
            "_date": {"extension": [{"url": "http://example.org/src", "valueReference": {"reference": pat_url}}]},
            "text": {"status": "generated", "div": div},
            "subject": {"reference": pat_url},
            "custodian": {"reference": oid_url},
            "content": [{"attachment": {"contentType": "text/plain", "url": bin_url}}],
            "extension": [{"url": "http://example.org/a", "valueUri": pat_url},
                          {"url": "http://example.org/b", "valueCanonical": canonical}],
        }, "request": {"method": "POST", "url": "DocumentReference"}},
    ]))
    assert r.status_code == 200, r.text
    locs = ["/".join(e["response"]["location"].split("/")[:2]) for e in r.json()["entry"]]
    doc = client.get(f"/fhir/{locs[3]}").json()
    assert doc["content"][0]["attachment"]["url"] == locs[0]
    assert doc["subject"]["reference"] == locs[1]
    assert doc["custodian"]["reference"] == locs[2]
    assert doc["_date"]["extension"][0]["valueReference"]["reference"] == locs[1]  # extension on a primitive
    assert doc["extension"][0]["valueUri"] == locs[1]
    assert doc["extension"][1]["valueCanonical"] == canonical  # canonical is not replaced
    assert f'href="{locs[1]}"' in doc["text"]["div"] and f'src="{locs[0]}"' in doc["text"]["div"]
    assert f'href="{canonical}"' in doc["text"]["div"]  # not an entry: left as it is


def test_dangling_urn_uuid_reference_fails_the_transaction(client):
    mark = uuid.uuid4().hex[:10]
    missing = f"urn:uuid:{uuid.uuid4()}"
    r = client.post("/fhir", json=_tx([
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:dangle", "value": mark}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": missing}},
         "request": {"method": "POST", "url": "Observation"}},
    ]))
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert "Bundle.entry[1]" in issue["diagnostics"] and missing in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert client.get(f"/fhir/Patient?identifier=urn:dangle|{mark}").json()["total"] == 0


def test_dangling_urn_uuid_reference_fails_the_batch_entry(client):
    r = client.post("/fhir", json=_tx([
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": f"urn:uuid:{uuid.uuid4()}"}}, "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
    ], "batch"))
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "400"
    assert entries[1]["response"]["status"] == "201 Created"


# ----------------------------------------------------------------------------- concurrency (issue 10)


def test_concurrent_opposite_order_transactions_never_500(live_server, auth_headers):
    """20 transactions PUT the same two Patients, half A,B and half B,A: on PostgreSQL
    this deadlocked without canonical lock order; every answer must be 200 (or, after
    bounded retries, 409/503), never 500, and every transaction's writes are whole."""
    a, b = f"dl-a-{uuid.uuid4().hex[:6]}", f"dl-b-{uuid.uuid4().hex[:6]}"
    statuses: list[int] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        first, second = (a, b) if n % 2 == 0 else (b, a)
        bundle = _tx([_put(first, gender="male", birthDate="2000-01-01"), _put(second, gender="female", birthDate="2000-01-01")])
        with httpx.Client(timeout=120, headers=auth_headers) as c:
            code = c.post(live_server, json=bundle).status_code
        with lock:
            statuses.append(code)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 20
    assert 500 not in statuses, statuses
    assert set(statuses) <= {200, 409, 503}, statuses
    ok = statuses.count(200)
    assert ok >= 18, statuses  # retries absorb the races; at most a rare give-up
    with httpx.Client(headers=auth_headers) as c:
        va = len(c.get(f"{live_server}/Patient/{a}/_history").json()["entry"])
        vb = len(c.get(f"{live_server}/Patient/{b}/_history").json()["entry"])
    assert va == vb == ok  # each successful transaction wrote both, once


def test_planning_errors_name_the_entry(client):
    r = client.post("/fhir", json=_tx([_put(f"ok-{uuid.uuid4().hex[:6]}"),
                                        {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient?bogus-param=1"}}]))
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["diagnostics"].startswith("Bundle.entry[1]")
