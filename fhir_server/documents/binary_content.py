"""A Binary's content kept in the blob store, and how the resource points at it.

The stored Binary resource has no `data`; its `_data` element carries the
extension `EXT_CONTENT` instead (a primitive may have extensions without a
value, FHIR R4 JSON section 2.6.2.5):

    "_data": {"extension": [{"url": EXT_CONTENT, "extension": [
        {"url": "key", "valueString": "Binary/<id>/<random>"},
        {"url": "size", "valueUnsignedInt": <bytes>},
        {"url": "sha256", "valueBase64Binary": "<base64 of the SHA-256>"}]}]}

Each version of a Binary points at its own blob, so vread and history keep
working. Reads by id put the content back (raw, or as base64 `data` in the
JSON form); searches and histories show the extension only.

Every Binary write passes `transform_binary` (in the write's transaction):
base64 `data` in the JSON form is checked by the upload rules and moved to the
store; an `EXT_CONTENT` sent by a client is accepted only if it names a blob
that belongs to this same Binary, and its size/hash are rewritten from the
store's own record, so a client can neither borrow another Binary's content
nor forge its hash.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..errors import FhirError
from ..storage import blobs
from ..storage.blobs import BlobInfo, BlobStoreError
from . import settings as doc_settings
from .ingest import ingest_bytes, new_key, store_unavailable
from .upload_rules import load_rules, media_type

EXT_CONTENT = "http://fhir-server.local/StructureDefinition/binary-external-content"
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def content_extension(info: BlobInfo) -> dict:
    return {
        "url": EXT_CONTENT,
        "extension": [
            {"url": "key", "valueString": info.key},
            {"url": "size", "valueUnsignedInt": info.size},
            {"url": "sha256", "valueBase64Binary": hex_to_b64(info.sha256)},
        ],
    }


def hex_to_b64(digest_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(digest_hex)).decode("ascii")


def blob_key(resource: dict) -> str | None:
    """The blob key a stored Binary points at, or None (content inline or absent)."""
    for ext in ((resource.get("_data") or {}).get("extension") or []):
        if isinstance(ext, dict) and ext.get("url") == EXT_CONTENT:
            for sub in ext.get("extension") or []:
                if isinstance(sub, dict) and sub.get("url") == "key" and isinstance(sub.get("valueString"), str):
                    return sub["valueString"]
            return ""
    return None


def without_content_extension(resource: dict) -> dict:
    """A copy of the Binary without EXT_CONTENT (what the JSON-form read shows)."""
    out = dict(resource)
    data_el = out.pop("_data", None)
    if isinstance(data_el, dict):
        rest = [e for e in data_el.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == EXT_CONTENT)]
        kept = {k: v for k, v in data_el.items() if k != "extension"}
        if rest:
            kept["extension"] = rest
        if kept:
            out["_data"] = kept
    return out


def _set_content(doc: dict, info: BlobInfo) -> None:
    doc.pop("data", None)
    data_el = doc.get("_data") if isinstance(doc.get("_data"), dict) else {}
    others = [e for e in data_el.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == EXT_CONTENT)]
    doc["_data"] = {**{k: v for k, v in data_el.items() if k != "extension"}, "extension": others + [content_extension(info)]}


_NEW_BLOBS = "documents.new_blobs"


def _forget(conn) -> None:
    conn.info.pop(_NEW_BLOBS, None)


def _drop_new_blobs(conn) -> None:
    for key in conn.info.pop(_NEW_BLOBS, ()):
        try:
            blobs.current().delete(key)
        except Exception:  # best effort: the write failed anyway
            pass


def store_in_transaction(conn, declared: str | None, key: str, data: bytes) -> BlobInfo:
    """Ingest in-memory content during a database write; if that transaction rolls
    back, the blob is deleted again (nothing half-written)."""
    from sqlalchemy import event

    settings = doc_settings.current()
    info = ingest_bytes(load_rules(settings.upload_rules), declared, key, data, settings.clamd_address or None)
    engine = conn.engine
    if not event.contains(engine, "rollback", _drop_new_blobs):
        event.listen(engine, "rollback", _drop_new_blobs)
        event.listen(engine, "commit", _forget)
    conn.info.setdefault(_NEW_BLOBS, []).append(info.key)
    return info


def decode_data(value: str) -> bytes:
    compact = "".join(value.split())
    if not _B64.match(compact) or len(compact) % 4:
        raise FhirError.of(400, "value", "Binary.data is not valid base64", "Binary.data")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise FhirError.of(400, "value", "Binary.data is not valid base64", "Binary.data") from None


def owned_blob(res_id: str, key: str) -> BlobInfo:
    """The blob `key` if it belongs to Binary/<res_id>; 422 otherwise."""
    if not key or not key.startswith(f"Binary/{res_id}/"):
        raise FhirError.of(422, "invalid", f"Binary.data's content reference does not belong to Binary/{res_id}", "Binary.data")
    try:
        info = blobs.current().info(key)
    except (BlobStoreError, ValueError) as exc:
        if isinstance(exc, ValueError):
            raise FhirError.of(422, "invalid", "Binary.data's content reference is malformed", "Binary.data") from None
        raise store_unavailable(exc) from exc
    if info is None:
        raise FhirError.of(422, "invalid", f"Binary.data's content reference names no stored content of Binary/{res_id}", "Binary.data")
    return info


def transform_binary(conn, ctx, res_type: str, res_id: str | None, parsed) -> None:
    """Write transform for Binary: content to the blob store, the resource points at it."""
    if res_type != "Binary" or res_id is None:
        return
    plain, preserving = parsed.plain, parsed.preserving
    declared = plain.get("contentType")
    rules = load_rules(doc_settings.current().upload_rules)
    if isinstance(plain.get("data"), str):
        info = store_in_transaction(conn, declared, new_key(res_id), decode_data(plain["data"]))
    else:
        key = blob_key(plain)
        if key is None:  # no content at all: a metadata-only Binary is valid R4
            return
        info = owned_blob(res_id, key)
        rule = rules.rule_for(declared)
        if rule.mime != info.content_type:
            raise FhirError.of(
                415, "not-supported",
                f"Binary.contentType '{media_type(declared)}' does not match the stored content ({info.content_type}); send the content again to change its type",
                "Binary.contentType",
            )
    for doc in (plain, preserving):
        _set_content(doc, info)
        doc["contentType"] = info.content_type  # the canonical name (image/jpg -> image/jpeg)


def content_info(resource: dict) -> BlobInfo | None:
    """The blob metadata behind a stored Binary (None when its content is inline or absent)."""
    key = blob_key(resource)
    if not key:
        return None
    try:
        return blobs.current().info(key)
    except BlobStoreError as exc:
        raise store_unavailable(exc) from exc
