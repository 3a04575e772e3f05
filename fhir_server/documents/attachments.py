"""DocumentReference attachments that point at this server's Binaries.

When a DocumentReference (or any write passing through here) carries
`content.attachment.url` naming a Binary on this server (``Binary/<id>``, the
same with ``_history/<v>``, or either under this server's base URL), the
attachment is completed from the stored content, in the write's transaction:

- `size`: bytes (R4 Attachment.size, unsignedInt);
- `hash`: base64 of the SHA-1 of the bytes, as R4 defines Attachment.hash;
- the extension `EXT_SHA256`: base64 of the SHA-256 (R4 names only SHA-1);
- `contentType` when the client left it out.

A url naming a Binary that does not exist is a 422; so is a size, hash or
contentType that contradicts the stored content.
"""

from __future__ import annotations

import re

from ..errors import FhirError
from ..storage import repository as repo
from .binary_content import content_info, hex_to_b64
from .upload_rules import media_type

EXT_SHA256 = "http://fhir-server.local/StructureDefinition/attachment-sha256"
_LOCAL = re.compile(r"^Binary/([A-Za-z0-9\-.]{1,64})(?:/_history/(\d+))?$")


def _relative(url: str, base_url: str) -> str:
    base = (base_url or "").rstrip("/")
    return url[len(base) + 1:] if base and url.startswith(base + "/") else url


def local_binary(url: str | None, base_url: str) -> tuple[str, int | None] | None:
    """(id, version or None) when `url` names a Binary on this server, else None."""
    if not isinstance(url, str):
        return None
    m = _LOCAL.match(_relative(url, base_url))
    if not m:
        return None
    return m.group(1), int(m.group(2)) if m.group(2) else None


def _attachments(doc: dict):
    for i, content in enumerate(doc.get("content") or []):
        if isinstance(content, dict) and isinstance(content.get("attachment"), dict):
            yield f"DocumentReference.content[{i}].attachment", content["attachment"]


def _stored_binary(conn, res_id: str, version: int | None) -> dict:
    from ..model import jsonio

    stored = repo.read_version(conn, "Binary", res_id, version) if version else repo.read_current(conn, "Binary", res_id)
    if stored is None or stored.deleted or stored.content is None:
        raise LookupError
    return jsonio.parse_plain(stored.content)


def transform_document_reference(conn, ctx, res_type: str, res_id: str | None, parsed) -> None:
    if res_type != "DocumentReference":
        return
    base = getattr(ctx, "base_url", "") or ""
    pairs = list(zip(_attachments(parsed.plain), _attachments(parsed.preserving)))
    for (path, att), (_p, att_keep) in pairs:
        target = local_binary(att.get("url"), base)
        if target is None:
            if isinstance(att.get("url"), str) and _relative(att["url"], base).split("/", 1)[0] == "Binary":
                # "Binary/", "Binary/a b", "Binary/1/_history/x": aimed at this server, naming no Binary
                raise FhirError.of(422, "value", f"{path}.url '{att['url']}' names no Binary: use Binary/<id> or "
                                   "Binary/<id>/_history/<version>", f"{path}.url")
            continue
        bin_id, version = target
        try:
            binary = _stored_binary(conn, bin_id, version)
        except LookupError:
            raise FhirError.of(422, "not-found", f"{path}.url names Binary/{bin_id}, which does not exist", f"{path}.url") from None
        info = content_info(binary)
        if info is None:
            continue  # content inline or absent: nothing to derive
        sha1 = hex_to_b64(info.sha1)
        sha256 = hex_to_b64(info.sha256)
        if "size" in att and att["size"] != info.size:
            raise FhirError.of(422, "value", f"{path}.size is {att['size']} but the stored content has {info.size} bytes", f"{path}.size")
        if "hash" in att and att["hash"] != sha1:
            raise FhirError.of(422, "value", f"{path}.hash does not match the stored content (SHA-1, base64)", f"{path}.hash")
        if att.get("contentType") and media_type(att["contentType"]) != info.content_type:
            raise FhirError.of(422, "value", f"{path}.contentType is {att['contentType']} but the stored content is {info.content_type}", f"{path}.contentType")
        for a in (att, att_keep):
            a.setdefault("contentType", info.content_type)
            a["size"] = info.size
            a["hash"] = sha1
            exts = [e for e in a.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == EXT_SHA256)]
            a["extension"] = exts + [{"url": EXT_SHA256, "valueBase64Binary": sha256}]
