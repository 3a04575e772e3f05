"""Upload rules as data, and sniffing the real type from the bytes."""

from __future__ import annotations

import pytest

from fhir_server.documents.ingest import Ingest
from fhir_server.documents.upload_rules import UploadRules, load_rules
from fhir_server.errors import FhirError
from fhir_server.storage.blobs.filesystem import FilesystemBlobStore
from tests.document_fixtures import heic_bytes, image_bytes, pdf_bytes


@pytest.mark.parametrize(
    "declared,make",
    [
        ("application/pdf", lambda: pdf_bytes("x")),
        ("image/jpeg", lambda: image_bytes("JPEG")),
        ("image/jpg", lambda: image_bytes("JPEG")),
        ("image/png", lambda: image_bytes("PNG")),
        ("image/tiff", lambda: image_bytes("TIFF")),
        ("image/heic", heic_bytes),
        ("image/heif", heic_bytes),
    ],
)
def test_allowed_types_pass(declared, make):
    rules = load_rules()
    rule = rules.rule_for(declared)
    rules.check_bytes(rule, make())


@pytest.mark.parametrize(
    "declared,data,looks",
    [
        ("application/pdf", b"\x7fELF\x02\x01\x01\x00" + bytes(300), "application/x-executable"),
        ("application/pdf", b"MZ\x90\x00\x03" + bytes(300), "application/x-msdownload"),
        ("application/pdf", None, "image/png"),
        ("image/jpeg", b"Hello, this is not a photo\n" * 10, "plain text"),
        ("image/png", b"", "nothing"),
        ("application/pdf", b"<!DOCTYPE html><html>", "an HTML page"),
    ],
)
def test_mismatch_is_415_saying_what_the_bytes_look_like(declared, data, looks):
    rules = load_rules()
    data = image_bytes("PNG") if data is None else data
    with pytest.raises(FhirError) as exc:
        rules.check_bytes(rules.rule_for(declared), data)
    assert exc.value.status == 415
    assert looks in exc.value.issues[0].diagnostics
    assert declared in exc.value.issues[0].diagnostics


@pytest.mark.parametrize("declared", ["application/x-msdownload", "text/html", "application/zip", "", None])
def test_types_not_listed_are_415(declared):
    with pytest.raises(FhirError) as exc:
        load_rules().rule_for(declared)
    assert exc.value.status == 415
    assert "application/pdf" in exc.value.issues[0].diagnostics  # says what is allowed


def test_rules_are_data(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("types:\n  - mime: image/png\n    max_bytes: 1000\n    label: PNG image\n")
    rules = UploadRules.load(path)
    assert set(rules.types) == {"image/png"}
    with pytest.raises(FhirError) as exc:
        rules.rule_for("application/pdf")
    assert exc.value.status == 415
    store = FilesystemBlobStore(tmp_path / "blobs")
    ing = Ingest(rules, "image/png", "Binary/x/1", store=store)
    with pytest.raises(FhirError) as exc:
        ing.feed(image_bytes("PNG") + bytes(2000))
    assert exc.value.status == 413
    ing.abort()
    assert store.info("Binary/x/1") is None


def test_nothing_is_stored_before_the_type_is_known(tmp_path):
    store = FilesystemBlobStore(tmp_path)
    ing = Ingest(load_rules(), "application/pdf", "Binary/y/1", store=store)
    ing.feed(b"\x7fELF")  # fewer bytes than the sniff window: held back
    assert ing.writer is None
    with pytest.raises(FhirError) as exc:
        ing.finish()
    assert exc.value.status == 415
    ing.abort()
    assert not (tmp_path / ".partial").exists() or not any((tmp_path / ".partial").iterdir())
