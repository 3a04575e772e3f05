"""The optional virus-scan hook against a real clamd (ClamAV daemon)."""

from __future__ import annotations

import pytest

from fhir_server.documents import scanning
from fhir_server.documents.ingest import Ingest
from fhir_server.documents.upload_rules import load_rules
from fhir_server.errors import FhirError
from fhir_server.storage.blobs.filesystem import FilesystemBlobStore
from tests.document_fixtures import EICAR, clamd_address, pdf_bytes  # noqa: F401  (fixture)


def test_clean_stream_passes(clamd_address):
    scan = scanning.start_scan(clamd_address)
    scan.feed(pdf_bytes("clean"))
    assert scan.verdict() is None


def test_infected_upload_is_422_and_nothing_is_stored(clamd_address, tmp_path):
    store = FilesystemBlobStore(tmp_path)
    ing = Ingest(load_rules(), "application/pdf", "Binary/v/1", clamd_address, store=store)
    data = pdf_bytes("bill") + EICAR  # a real PDF header: passes the type check, not the scan
    with pytest.raises(FhirError) as exc:
        ing.feed(data)
        ing.finish()
    ing.abort()
    assert exc.value.status == 422
    assert "Test-EICAR" in exc.value.issues[0].diagnostics
    assert store.info("Binary/v/1") is None


def test_scanner_down_is_503(tmp_path):
    with pytest.raises(FhirError) as exc:
        scanning.start_scan(f"unix:{tmp_path / 'nothing.sock'}")
    assert exc.value.status == 503
    assert exc.value.headers.get("Retry-After")
