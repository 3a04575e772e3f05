"""Binary behaves like a file (R4 binary.html): raw upload and download, byte
ranges, the JSON form, upload rules, and DocumentReference attachments."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.document_fixtures import clamd_address, EICAR, image_bytes, pdf_bytes  # noqa: F401  (fixture)

PDF = pdf_bytes("Faktura 1234", "Fysioterapi, 3 behandlinger", "I alt 1.650,00 kr")


def _upload(client, data=PDF, ctype="application/pdf", **headers):
    return client.post("/fhir/Binary", content=data, headers={"Content-Type": ctype, **headers})


def test_raw_pdf_upload_and_download_byte_for_byte(client):
    r = _upload(client, **{"X-Security-Context": "Patient/p-doc-1"})
    assert r.status_code == 201, r.text
    bid = r.json()["id"]
    assert r.headers["Location"].endswith(f"/Binary/{bid}/_history/1")
    assert r.json()["contentType"] == "application/pdf"
    assert r.json()["securityContext"] == {"reference": "Patient/p-doc-1"}
    assert "data" not in r.json()  # 3 MiB of base64 does not come back on a write

    got = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/pdf"})
    assert got.status_code == 200
    assert got.content == PDF
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["x-security-context"] == "Patient/p-doc-1"
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["etag"] == 'W/"1"'
    # a browser's Accept, and none at all, get the file too (not a FHIR format)
    assert client.get(f"/fhir/Binary/{bid}", headers={"Accept": "text/html,*/*;q=0.8"}).content == PDF
    assert client.get(f"/fhir/Binary/{bid}", headers={"Accept": ""}).content == PDF


def test_json_form_read_carries_base64_data(client):
    bid = _upload(client).json()["id"]
    for accept in ("application/fhir+json", "application/json"):
        r = client.get(f"/fhir/Binary/{bid}", headers={"Accept": accept})
        assert r.status_code == 200
        body = r.json()
        assert body["resourceType"] == "Binary" and body["contentType"] == "application/pdf"
        assert base64.b64decode(body["data"]) == PDF
        assert "_data" not in body  # the storage pointer is not part of the JSON form
    r = client.get(f"/fhir/Binary/{bid}?_format=json")
    assert base64.b64decode(r.json()["data"]) == PDF


def test_json_form_write_goes_to_the_blob_store(client):
    data = image_bytes("PNG")
    r = client.post("/fhir/Binary", json={"resourceType": "Binary", "contentType": "image/png", "data": base64.b64encode(data).decode()})
    assert r.status_code == 201, r.text
    assert "data" not in r.json()
    bid = r.json()["id"]
    assert client.get(f"/fhir/Binary/{bid}").content == data


@pytest.mark.parametrize("spec,expect", [("bytes=0-9", (0, 9)), ("bytes=100-", (100, None)), ("bytes=-50", (-50, None)), ("bytes=5-5", (5, 5))])
def test_range_requests(client, spec, expect):
    bid = _upload(client).json()["id"]
    r = client.get(f"/fhir/Binary/{bid}", headers={"Range": spec})
    assert r.status_code == 206
    first, last = expect
    want = PDF[first:] if last is None else PDF[first:last + 1]
    assert r.content == want
    start = first if first >= 0 else len(PDF) + first
    assert r.headers["content-range"] == f"bytes {start}-{start + len(want) - 1}/{len(PDF)}"
    assert int(r.headers["content-length"]) == len(want)


def test_range_outside_the_content_is_416(client):
    bid = _upload(client).json()["id"]
    r = client.get(f"/fhir/Binary/{bid}", headers={"Range": f"bytes={len(PDF) + 10}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(PDF)}"
    assert r.json()["resourceType"] == "OperationOutcome"
    # several ranges, or a stale If-Range: the whole file
    assert client.get(f"/fhir/Binary/{bid}", headers={"Range": "bytes=0-1,5-6"}).content == PDF
    assert client.get(f"/fhir/Binary/{bid}", headers={"Range": "bytes=0-1", "If-Range": 'W/"99"'}).status_code == 200
    assert client.get(f"/fhir/Binary/{bid}", headers={"Range": "bytes=0-1", "If-Range": 'W/"1"'}).status_code == 206


def test_conditional_read_and_versions(client):
    bid = _upload(client).json()["id"]
    assert client.get(f"/fhir/Binary/{bid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    png = image_bytes("PNG")
    r = client.put(f"/fhir/Binary/{bid}", content=png, headers={"Content-Type": "image/png", "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert client.get(f"/fhir/Binary/{bid}").content == png
    assert client.get(f"/fhir/Binary/{bid}").headers["content-type"] == "image/png"
    old = client.get(f"/fhir/Binary/{bid}/_history/1")
    assert old.content == PDF and old.headers["content-type"] == "application/pdf"
    r = client.put(f"/fhir/Binary/{bid}", content=png, headers={"Content-Type": "image/png", "If-Match": 'W/"1"'})
    assert r.status_code == 412


def test_put_raw_creates_with_client_id(client):
    r = client.put("/fhir/Binary/raw-put-1", content=PDF, headers={"Content-Type": "application/pdf"})
    assert r.status_code == 201
    assert client.get("/fhir/Binary/raw-put-1").content == PDF


def test_executable_labelled_pdf_is_415_and_nothing_is_written(client):
    before = client.get("/fhir/Binary?_summary=count").json()["total"]
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(5000)
    r = _upload(client, elf)
    assert r.status_code == 415
    assert "application/x-executable" in r.json()["issue"][0]["diagnostics"]
    # the JSON form passes the same rules
    r = client.post("/fhir/Binary", json={"resourceType": "Binary", "contentType": "application/pdf", "data": base64.b64encode(elf).decode()})
    assert r.status_code == 415
    assert client.get("/fhir/Binary?_summary=count").json()["total"] == before


def test_types_not_allowed_are_415(client):
    r = _upload(client, b"<html><script>alert(1)</script>", "text/html")
    assert r.status_code == 415
    assert "allowed" in r.json()["issue"][0]["diagnostics"]
    r = client.post("/fhir/Binary", json={"resourceType": "Binary", "contentType": "application/x-sh", "data": base64.b64encode(b"#!/bin/sh\n").decode()})
    assert r.status_code == 415


def test_text_is_utf8_text_with_no_file_signature(client):
    r = _upload(client, "Henvisning: knæ, 3 behandlinger".encode(), "text/plain; charset=utf-8")
    assert r.status_code == 201, r.text
    assert client.get(f"/fhir/Binary/{r.json()['id']}").headers["content-type"].startswith("text/plain")
    assert _upload(client, b"\x7fELF\x02\x01\x01\x00" + bytes(300), "text/plain").status_code == 415
    late = b"plain text " * 2000 + b"\xff\xfe not utf-8"  # past the sniffed head
    r = _upload(client, late, "text/plain")
    assert r.status_code == 415 and "UTF-8" in r.json()["issue"][0]["diagnostics"]


def test_bad_base64_is_400(client):
    r = client.post("/fhir/Binary", json={"resourceType": "Binary", "contentType": "application/pdf", "data": "JVBER!!!"})
    assert r.status_code == 400


def test_size_limit_from_the_rules_is_413(client, settings, tmp_path, monkeypatch):
    rules = tmp_path / "small.yaml"
    rules.write_text("types:\n  - mime: application/pdf\n    max_bytes: 500\n")
    monkeypatch.setattr(settings, "upload_rules", str(rules))
    r = _upload(client)
    assert r.status_code == 413
    assert "500 bytes" in r.json()["issue"][0]["diagnostics"]


def test_content_pointer_cannot_be_borrowed_or_forged(client):
    secret = _upload(client).json()
    ext = secret["_data"]
    # another Binary claiming the first one's stored content
    r = client.post("/fhir/Binary", json={"resourceType": "Binary", "contentType": "application/pdf", "_data": ext})
    assert r.status_code == 422
    # the same Binary re-sent as metadata keeps its content, with the store's own size and hash
    forged = {**secret, "_data": {"extension": [{**ext["extension"][0], "extension": [
        e if e["url"] == "key" else ({"url": "size", "valueUnsignedInt": 1} if e["url"] == "size" else e) for e in ext["extension"][0]["extension"]
    ]}]}}
    forged.pop("meta")
    r = client.put(f"/fhir/Binary/{secret['id']}", json=forged)
    assert r.status_code == 200, r.text
    sizes = [e["valueUnsignedInt"] for e in r.json()["_data"]["extension"][0]["extension"] if e["url"] == "size"]
    assert sizes == [len(PDF)]
    # and may not relabel it
    forged["contentType"] = "image/png"
    assert client.put(f"/fhir/Binary/{secret['id']}", json=forged).status_code == 415


def test_document_reference_gets_size_and_hashes(client):
    bid = _upload(client).json()["id"]
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/dk-1"},
        "type": {"coding": [{"system": "http://loinc.org", "code": "11503-0"}]},
        "date": "2026-03-04T10:00:00Z",
        "context": {"related": [{"reference": "Claim/case-1"}]},
        "content": [{"attachment": {"url": f"Binary/{bid}", "title": "faktura.pdf"}}],
    }
    r = client.post("/fhir/DocumentReference", json=doc)
    assert r.status_code == 201, r.text
    att = r.json()["content"][0]["attachment"]
    assert att["size"] == len(PDF)
    assert att["contentType"] == "application/pdf"
    assert att["hash"] == base64.b64encode(hashlib.sha1(PDF).digest()).decode()
    sha256 = [e["valueBase64Binary"] for e in att["extension"] if e["url"].endswith("attachment-sha256")]
    assert sha256 == [base64.b64encode(hashlib.sha256(PDF).digest()).decode()]
    did = r.json()["id"]
    for query in ("patient=dk-1", "related=Claim/case-1", "type=http://loinc.org|11503-0", "date=2026-03-04"):
        found = client.get(f"/fhir/DocumentReference?{query}").json()
        assert did in [e["resource"]["id"] for e in found.get("entry", [])], query


@pytest.mark.parametrize("att,status", [
    ({"url": "Binary/does-not-exist"}, 422),
    ({"size": 1}, 422),
    ({"hash": base64.b64encode(b"x" * 20).decode()}, 422),
    ({"contentType": "image/png"}, 422),
])
def test_document_reference_contradicting_the_content_is_refused(client, att, status):
    bid = _upload(client).json()["id"]
    doc = {"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {"url": f"Binary/{bid}", **att}}]}
    r = client.post("/fhir/DocumentReference", json=doc)
    assert r.status_code == status, r.text


@pytest.mark.parametrize("url", ["Binary/", "Binary", "http://testserver/fhir/Binary/", "Binary/a%20b", "Binary/x/_history/one"])
def test_document_reference_url_naming_no_binary_is_refused(client, url):
    """A url aimed at this server's Binary endpoint that names no Binary is a 422, nothing written (QA F8)."""
    before = client.get("/fhir/DocumentReference", params={"_summary": "count"}).json()["total"]
    doc = {"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {"url": url}}]}
    r = client.post("/fhir/DocumentReference", json=doc)
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == ["DocumentReference.content[0].attachment.url"]
    assert client.get("/fhir/DocumentReference", params={"_summary": "count"}).json()["total"] == before
    # a url elsewhere is the client's business
    other = {"resourceType": "DocumentReference", "status": "current",
             "content": [{"attachment": {"url": "https://archive.example.org/Binary/1"}}]}
    assert client.post("/fhir/DocumentReference", json=other).status_code == 201


@pytest.mark.parametrize("header", ["garbage", "Patient/", "NoSuchType/1", "Patient/a b", "#contained"])
def test_security_context_header_that_is_no_reference_is_400(client, header):
    before = client.get("/fhir/Binary", params={"_summary": "count"}).json()["total"]
    r = _upload(client, **{"X-Security-Context": header})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["Binary.securityContext"]
    assert client.get("/fhir/Binary", params={"_summary": "count"}).json()["total"] == before
    for good in ("DocumentReference/doc-1", "Patient/p-1/_history/2", "https://other.example/fhir/Patient/1"):
        assert _upload(client, **{"X-Security-Context": good}).status_code == 201, good


def test_virus_scan_over_http(client, settings, monkeypatch, clamd_address):
    monkeypatch.setattr(settings, "clamd_address", clamd_address)
    assert _upload(client).status_code == 201
    r = _upload(client, PDF + EICAR)
    assert r.status_code == 422
    assert "virus" in r.json()["issue"][0]["diagnostics"]


def test_failed_transaction_leaves_no_blob(client, settings):
    from pathlib import Path

    def blob_files():
        return sorted(p for p in Path(settings.blob_dir).rglob("*.bin"))

    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "active": True}).json()["id"]
    before = blob_files()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:7f6d3a1e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Binary", "contentType": "image/png", "data": base64.b64encode(image_bytes("PNG")).decode()},
         "request": {"method": "POST", "url": "Binary"}},
        {"resource": {"resourceType": "Patient", "id": pid, "active": False},
         "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"99"'}},
    ]}
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 412, r.text
    # compared as sets: other tests' housekeeping may remove their own orphans meanwhile
    assert not set(blob_files()) - set(before)
    bundle["entry"].pop()
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    binary_id = r.json()["entry"][0]["response"]["location"].split("/")[1]
    new = set(blob_files()) - set(before)
    assert len(new) == 1 and binary_id in str(next(iter(new)))


def test_content_lost_from_the_store_is_503_not_a_broken_file(client):
    from fhir_server.storage import blobs

    body = _upload(client).json()
    key = next(e["valueString"] for e in body["_data"]["extension"][0]["extension"] if e["url"] == "key")
    blobs.current().delete(key)
    for accept in ("application/pdf", "application/fhir+json"):
        r = client.get(f"/fhir/Binary/{body['id']}", headers={"Accept": accept})
        assert r.status_code == 503
        assert r.headers["retry-after"]


def test_a_patient_uploads_and_reads_a_bill_under_their_own_security_context(client, anonymous_client):
    """R4 Binary.securityContext: a Binary is within a token's reach when its security
    context is. A patient uploads a bill tied to their own record and reads it back; another
    patient's token cannot; a context in someone else's record is refused."""
    from tests.conftest import make_token

    ann = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Ann"}]}).json()["id"]
    bob = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Bob"}]}).json()["id"]

    def as_(pid):
        return {"Authorization": f"Bearer {make_token('patient/*.cruds', patient=pid)}"}

    pdf = {"Content-Type": "application/pdf"}
    r = anonymous_client.post("/fhir/Binary", content=PDF, headers={**pdf, **as_(ann), "X-Security-Context": f"Patient/{ann}"})
    assert r.status_code == 201, r.text
    bid = r.headers["location"].split("/Binary/")[1].split("/")[0]
    assert anonymous_client.get(f"/fhir/Binary/{bid}", headers=as_(ann)).content == PDF
    assert anonymous_client.get(f"/fhir/Binary/{bid}", headers=as_(bob)).status_code == 404
    assert anonymous_client.get(f"/fhir/Binary/{bid}", headers={**as_(bob), "Accept": "application/fhir+json"}).status_code == 404
    refused = anonymous_client.post("/fhir/Binary", content=PDF, headers={**pdf, **as_(ann), "X-Security-Context": f"Patient/{bob}"})
    assert refused.status_code == 403
    assert anonymous_client.post("/fhir/Binary", content=PDF, headers={**pdf, **as_(ann)}).status_code == 403
