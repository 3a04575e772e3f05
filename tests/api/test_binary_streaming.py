"""Large Binaries are streamed: a 50 MB upload and download over a real HTTP
server keep the server's Python memory flat; the S3-compatible store serves
the same HTTP interface."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import httpx
import pytest

from tests.document_fixtures import pdf_bytes, s3_endpoint  # noqa: F401  (fixture)

SIZE = 50 * 1000 * 1000
CHUNK = 256 * 1024


HEAD = pdf_bytes("large scan")  # reportlab stamps the time: made once


def _body(seed: bytes):
    head = HEAD
    yield head
    sent = len(head)
    block = hashlib.sha256(seed).digest() * (CHUNK // 32)
    while sent < SIZE:
        part = block[: min(CHUNK, SIZE - sent)]
        sent += len(part)
        yield part


def test_50mb_upload_and_download_with_flat_memory(live_server, auth_headers):
    digest = hashlib.sha256()
    for part in _body(b"seed"):
        digest.update(part)
    want = digest.hexdigest()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with httpx.Client(timeout=300, headers=auth_headers) as http:
            r = http.post(f"{live_server}/Binary", content=_body(b"seed"), headers={"Content-Type": "application/pdf"})
            assert r.status_code == 201, r.text
            bid = r.json()["id"]
            _cur, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            got = hashlib.sha256()
            size = 0
            with http.stream("GET", f"{live_server}/Binary/{bid}", headers={"Accept": "application/pdf"}) as resp:
                assert resp.status_code == 200
                assert int(resp.headers["content-length"]) == SIZE
                for part in resp.iter_bytes():
                    got.update(part)
                    size += len(part)
            _cur, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == SIZE and got.hexdigest() == want
    # Python allocations of server and client together stay a small fraction of
    # the 50 MB that travelled (buffers of ~1 MiB), whatever the file's size.
    print(f"peak traced memory: upload {upload_peak / 2**20:.1f} MiB, download {download_peak / 2**20:.1f} MiB for {SIZE / 1e6:.0f} MB")
    assert upload_peak < 12 * 1024 * 1024, upload_peak
    assert download_peak < 12 * 1024 * 1024, download_peak


@pytest.fixture
def s3_client(settings, s3_endpoint, auth_headers):
    from fastapi.testclient import TestClient

    from fhir_server import plugins
    from fhir_server.bootstrap import build_app

    s3_settings = settings.model_copy(update={
        "blob_store": "s3", "s3_bucket": f"fhir-{os.getpid()}", "s3_endpoint_url": s3_endpoint,
        "s3_region": "eu-north-1", "s3_access_key_id": "test", "s3_secret_access_key": "test", "s3_create_bucket": True,
    })
    app = build_app(s3_settings)
    try:
        with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
            yield c
    finally:
        plugins.install(settings)  # the session's filesystem store again


def test_s3_store_over_http(s3_client):
    data = pdf_bytes("stored in S3") + os.urandom(7 * 1024 * 1024)  # a multipart upload
    r = s3_client.post("/fhir/Binary", content=data, headers={"Content-Type": "application/pdf"})
    assert r.status_code == 201, r.text
    bid = r.json()["id"]
    from fhir_server.storage import blobs

    assert blobs.current().name == "s3"
    assert s3_client.get(f"/fhir/Binary/{bid}").content == data
    part = s3_client.get(f"/fhir/Binary/{bid}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
