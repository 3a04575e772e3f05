"""The blob-store contract, held on both implementations: the filesystem and
an S3-compatible server (moto in server mode, spoken to over HTTP by boto3)."""

from __future__ import annotations

import hashlib
import os

import pytest

from fhir_server.storage.blobs.filesystem import FilesystemBlobStore
from tests.document_fixtures import s3_endpoint, s3_store  # noqa: F401  (fixtures)


@pytest.fixture(params=["filesystem", "s3"])
def store(request, tmp_path):
    if request.param == "filesystem":
        return FilesystemBlobStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_store")


def test_streamed_write_hashes_and_reads_back(store):
    data = os.urandom(6 * 1024 * 1024 + 123)  # more than one S3 part
    w = store.writer("Binary/a/1")
    for i in range(0, len(data), 100_000):
        w.write(data[i:i + 100_000])
    info = w.commit("application/pdf")
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.sha1 == hashlib.sha1(data).hexdigest()
    assert store.info("Binary/a/1") == info
    assert b"".join(store.read("Binary/a/1")) == data


def test_ranges(store):
    data = bytes(range(256)) * 1000
    store.put_bytes("Binary/b/1", data, "image/png")
    assert b"".join(store.read("Binary/b/1", 10, 19)) == data[10:20]
    assert b"".join(store.read("Binary/b/1", 255_990)) == data[255_990:]
    assert b"".join(store.read("Binary/b/1", 0, 0)) == data[:1]


def test_abort_and_delete_leave_nothing(store):
    w = store.writer("Binary/c/1")
    w.write(b"%PDF-1.4 partial")
    w.abort()
    assert store.info("Binary/c/1") is None
    store.put_bytes("Binary/c/2", b"x" * 10, "image/png")
    store.delete("Binary/c/2")
    assert store.info("Binary/c/2") is None
    store.delete("Binary/c/never")  # absent: no error


def test_unsafe_keys_are_refused(store):
    for key in ("../etc/passwd", "/abs", "Binary/../../x", ""):
        with pytest.raises(ValueError):
            store.writer(key)


def test_uncommitted_blob_is_invisible(tmp_path):
    store = FilesystemBlobStore(tmp_path)
    w = store.writer("Binary/d/1")
    w.write(b"abc")
    assert store.info("Binary/d/1") is None
    w.commit("image/png")
    assert store.info("Binary/d/1").size == 3
    assert not any((tmp_path / ".partial").iterdir())


def test_listing_in_a_stable_order_resumes_after_a_key(store):
    """What the orphan sweeper walks: every stored blob once, resumable from the last key."""
    from datetime import datetime, timedelta, timezone

    keys = ["Binary/a1/x", "Binary/a1/y", "Binary/a2/x", "Binary/b/z"]
    for key in reversed(keys):
        store.put_bytes(key, b"1", "image/png")
    listed = list(store.list_blobs())
    assert [k for k, _ in listed] == keys
    now = datetime.now(timezone.utc)
    assert all(now - timedelta(minutes=5) < at < now + timedelta(minutes=5) for _, at in listed)
    assert [k for k, _ in store.list_blobs(after="Binary/a1/y")] == keys[2:]
    assert list(store.list_blobs(after="Binary/b/z")) == []
    store.delete("Binary/a2/x")
    assert [k for k, _ in store.list_blobs()] == ["Binary/a1/x", "Binary/a1/y", "Binary/b/z"]


def test_unfinished_uploads_are_discarded_when_old(store):
    from datetime import datetime, timedelta, timezone

    w = store.writer("Binary/e/1")
    w.write(os.urandom(9 * 1024 * 1024))  # more than one S3 part (8 MiB): a multipart upload is open
    if store.name != "s3":  # moto reports every multipart upload as initiated in 2010: no young one to keep
        assert store.discard_unfinished(datetime.now(timezone.utc) - timedelta(hours=1)) == 0
    assert store.discard_unfinished(datetime.now(timezone.utc) + timedelta(minutes=1)) == 1
    assert store.info("Binary/e/1") is None and list(store.list_blobs()) == []
    w.abort()  # the writer's own clean-up finds nothing left
