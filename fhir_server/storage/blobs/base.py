"""The blob-store interface: content kept outside the resources table.

A blob is an immutable byte string under a key (``Binary/<id>/<random>``),
with a small metadata record (size in bytes, SHA-256 and SHA-1 as lowercase
hex, the content type) written once the bytes are complete. Writing is
streamed: a `BlobWriter` takes chunks, hashes and counts them as they pass,
and `commit()` makes the blob visible; `abort()` leaves nothing behind.
Reading is streamed too, optionally one byte range (RFC 9110 section 14).

Two implementations: `FilesystemBlobStore` (the default, under the data
directory) and `S3BlobStore` (any S3-compatible object store, through boto3).
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Iterator

CHUNK = 64 * 1024  # bytes per chunk when streaming out
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")


class BlobStoreError(Exception):
    """The store failed (unreachable, out of space...): the server answers 503."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int  # bytes
    sha256: str  # hex
    sha1: str  # hex (FHIR R4 Attachment.hash is SHA-1)
    content_type: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "BlobInfo":
        return cls(str(data["key"]), int(data["size"]), str(data["sha256"]), str(data["sha1"]), str(data["content_type"]))


def check_key(key: str) -> str:
    """Keys are relative paths of safe segments (no '..', no leading '/')."""
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobWriter(ABC):
    """Receives one blob's bytes in order; hashes and counts them on the way."""

    def __init__(self, key: str):
        self.key = check_key(key)
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1()
        self._done = False

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._sha256.update(chunk)
        self._sha1.update(chunk)
        self.size += len(chunk)
        self._write(chunk)

    def commit(self, content_type: str) -> BlobInfo:
        """Make the blob readable under its key; returns its metadata."""
        info = BlobInfo(self.key, self.size, self._sha256.hexdigest(), self._sha1.hexdigest(), content_type)
        self._commit(info)
        self._done = True
        return info

    def abort(self) -> None:
        """Drop what was written (idempotent; a no-op after commit)."""
        if not self._done:
            self._done = True
            self._abort()

    @abstractmethod
    def _write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _commit(self, info: BlobInfo) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...


class BlobStore(ABC):
    """Where Binary content lives. Implementations are thread-safe."""

    name: str = "?"

    @abstractmethod
    def writer(self, key: str) -> BlobWriter:
        """A writer for a new blob under `key` (keys are never reused)."""

    @abstractmethod
    def info(self, key: str) -> BlobInfo | None:
        """The metadata of a committed blob, or None when there is none."""

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end] (inclusive, as in an HTTP Range; end None = to the last byte), in chunks."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob and its metadata (no error when absent)."""

    def list_blobs(self, after: str = "") -> Iterator[tuple[str, datetime]]:
        """Every blob whose bytes are in the store (with or without metadata), in the
        store's own stable key order, starting after key `after` (a resumable cursor):
        (key, when its bytes were stored as an aware UTC datetime). For the orphan sweeper
        (fhir_server/documents/orphans.py); a store that cannot list raises NotImplementedError."""
        raise NotImplementedError(f"the {self.name} blob store cannot list its blobs")

    def discard_unfinished(self, before: datetime) -> int:
        """Remove uploads started before `before` that never completed (a crash mid-upload);
        returns how many. Stores without such leftovers return 0."""
        return 0

    def put_bytes(self, key: str, data: bytes, content_type: str) -> BlobInfo:
        """Store a small, already in-memory value (the JSON form of a Binary)."""
        w = self.writer(key)
        try:
            for i in range(0, len(data), 1024 * 1024):
                w.write(data[i:i + 1024 * 1024])
            return w.commit(content_type)
        except BaseException:
            w.abort()
            raise

    def read_all(self, key: str) -> bytes:
        """Whole content in memory: for small blobs only (tests, PDF rendering)."""
        return b"".join(self.read(key))
