"""Taking in one document's bytes: type check, size limit, virus scan, store.

The same pipeline serves a raw upload (fed chunk by chunk as the request body
arrives, never whole in memory) and the base64 `data` of a Binary's JSON form.
The first `SNIFF_BYTES` are held back until the type has been checked, so
nothing reaches the store (or the scanner) for content that will be refused.
"""

from __future__ import annotations

import codecs
import uuid

from ..errors import FhirError
from ..storage import blobs
from ..storage.blobs import BlobInfo, BlobStoreError
from . import scanning
from .upload_rules import SNIFF_BYTES, TypeRule, UploadRules


def new_key(res_id: str) -> str:
    """A fresh blob key for a version of Binary/<res_id>."""
    return f"Binary/{res_id}/{uuid.uuid4().hex}"


def store_unavailable(exc: Exception) -> FhirError:
    err = FhirError.of(503, "transient", f"The document store is not available ({exc}); nothing was stored")
    err.headers["Retry-After"] = "30"
    return err


class Ingest:
    """feed() chunks, then finish() -> BlobInfo; abort() on any failure."""

    def __init__(self, rules: UploadRules, declared: str | None, key: str, clamd_address: str | None = None, store=None):
        self.rules = rules
        self.rule: TypeRule = rules.rule_for(declared)
        self.key = key
        self.store = store or blobs.current()
        self.clamd_address = clamd_address
        self.head = bytearray()
        self.size = 0
        self.writer = None
        self.scan = None
        # text types: the whole content must be UTF-8, checked as it passes
        self.text = codecs.getincrementaldecoder("utf-8")() if self.rule.kind == "text" else None

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        self.rules.check_size(self.rule, self.size)
        if self.writer is None:
            self.head += chunk
            if len(self.head) >= SNIFF_BYTES:
                self._open()
            return
        self._pass(chunk)

    def _open(self) -> None:
        self.rules.check_bytes(self.rule, bytes(self.head))
        self.scan = scanning.start_scan(self.clamd_address)
        try:
            self.writer = self.store.writer(self.key)
        except (BlobStoreError, OSError) as exc:
            raise store_unavailable(exc) from exc
        head, self.head = bytes(self.head), bytearray()
        self._pass(head)

    def _pass(self, chunk: bytes) -> None:
        if self.text is not None:
            self._decode(chunk)
        if self.scan is not None:
            self.scan.feed(chunk)
        try:
            self.writer.write(chunk)
        except (BlobStoreError, OSError) as exc:
            raise store_unavailable(exc) from exc

    def _decode(self, chunk: bytes, final: bool = False) -> None:
        try:
            self.text.decode(chunk, final)
        except UnicodeDecodeError:
            raise FhirError.of(415, "not-supported", f"The content was declared as {self.rule.mime} but is not UTF-8 text; nothing was stored", "Binary.contentType") from None
        if b"\0" in chunk:
            raise FhirError.of(415, "not-supported", f"The content was declared as {self.rule.mime} but holds binary data; nothing was stored", "Binary.contentType")

    def finish(self) -> BlobInfo:
        if self.writer is None:
            self._open()
        if self.text is not None:
            self._decode(b"", final=True)
        if self.scan is not None:
            self.scan.verdict()
        try:
            return self.writer.commit(self.rule.mime)
        except (BlobStoreError, OSError) as exc:
            raise store_unavailable(exc) from exc

    def abort(self) -> None:
        if self.scan is not None:
            self.scan.close()
        if self.writer is not None:
            self.writer.abort()


def ingest_bytes(rules: UploadRules, declared: str | None, key: str, data: bytes, clamd_address: str | None = None) -> BlobInfo:
    """The whole pipeline for content already in memory (the JSON form's base64 data)."""
    ing = Ingest(rules, declared, key, clamd_address)
    try:
        for i in range(0, len(data), 1024 * 1024):
            ing.feed(data[i:i + 1024 * 1024])
        return ing.finish()
    except BaseException:
        ing.abort()
        raise
