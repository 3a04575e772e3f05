"""Upload rules as data: which content types a Binary may hold, how large, and
whether the bytes are really what they claim to be.

The rules file (`mappings/documents/upload-rules.yaml`, or the file named by
`FHIR_SERVER_UPLOAD_RULES`) lists the allowed media types with a size limit
each. The real type is sniffed from the first bytes with the `filetype`
library; a declared type that is not allowed, or bytes that are something else,
is refused with 415 and a message saying what the bytes look like.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import filetype
import yaml

from ..errors import FhirError

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "mappings" / "documents" / "upload-rules.yaml"
SNIFF_BYTES = 8192  # filetype reads at most 8 KiB; all signatures we accept sit in the first 300 bytes


@dataclass(frozen=True)
class TypeRule:
    mime: str
    label: str
    max_bytes: int
    kind: str = "binary"  # binary: the file signature must be this type; text: UTF-8 text with no file signature


@dataclass(frozen=True)
class UploadRules:
    types: dict[str, TypeRule]  # canonical mime -> rule
    aliases: dict[str, str]  # any accepted name (canonical included) -> canonical mime

    @classmethod
    def load(cls, path: str | Path | None = None) -> "UploadRules":
        data = yaml.safe_load(Path(path or DEFAULT_RULES).read_text(encoding="utf-8")) or {}
        types: dict[str, TypeRule] = {}
        aliases: dict[str, str] = {}
        for entry in data.get("types") or []:
            mime = str(entry["mime"]).lower()
            kind = str(entry.get("kind") or "binary")
            if kind not in ("binary", "text"):
                raise ValueError(f"upload rule {mime}: kind must be binary or text")
            types[mime] = TypeRule(mime, str(entry.get("label") or mime), int(entry["max_bytes"]), kind)
            aliases[mime] = mime
            for alias in entry.get("aliases") or []:
                aliases[str(alias).lower()] = mime
        return cls(types, aliases)

    @property
    def largest(self) -> int:
        return max((t.max_bytes for t in self.types.values()), default=0)

    def rule_for(self, declared: str | None) -> TypeRule:
        """The rule for a declared Content-Type (parameters ignored); 415 when not allowed."""
        mime = media_type(declared)
        canonical = self.aliases.get(mime)
        if canonical is None:
            allowed = ", ".join(sorted(self.types))
            shown = mime or "(none)"
            raise FhirError.of(415, "not-supported", f"Content type '{shown}' is not accepted for documents; allowed: {allowed}", "Binary.contentType")
        return self.types[canonical]

    def check_bytes(self, rule: TypeRule, head: bytes) -> None:
        """Refuse (415) when the first bytes are not `rule`'s type."""
        head = head[:SNIFF_BYTES]
        seen = sniff(head)
        if rule.kind == "text":
            if seen is None and is_text(head):
                return
        elif seen is not None and self.aliases.get(seen, seen) == rule.mime:
            return
        raise FhirError.of(
            415,
            "not-supported",
            f"The content was declared as {rule.mime} but its bytes look like {describe(head, seen)}; nothing was stored",
            "Binary.contentType",
        )

    def check_size(self, rule: TypeRule, size: int) -> None:
        if size > rule.max_bytes:
            raise FhirError.of(413, "too-costly", f"A {rule.label} may be at most {rule.max_bytes} bytes; this one is larger")


def is_text(head: bytes) -> bool:
    """UTF-8 text without NUL bytes (a multi-byte character cut at the end of `head` is fine)."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def sniff(head: bytes) -> str | None:
    """The media type the bytes' signature says, or None when no signature matches."""
    kind = filetype.guess(head[:SNIFF_BYTES]) if head else None
    return kind.mime if kind else None


def describe(head: bytes, seen: str | None) -> str:
    """Human words for what the bytes are, for the 415 message."""
    if seen:
        kind = filetype.get_type(mime=seen)
        ext = f" (.{kind.extension})" if kind is not None else ""
        return f"{seen}{ext}"
    if not head:
        return "nothing (the content is empty)"
    if head.startswith((b"MZ", b"\x7fELF", b"#!")) or head[:4] in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe"):
        return "an executable program"
    try:
        text = head[:SNIFF_BYTES].decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data (no known file signature)"
    stripped = text.lstrip()
    if stripped.startswith(("<html", "<!DOCTYPE", "<!doctype")):
        return "an HTML page"
    if stripped.startswith(("{", "[")):
        return "JSON text"
    return "plain text"


_cache: dict[str, UploadRules] = {}


def load_rules(path: str | None = None) -> UploadRules:
    """The rules from `path` (default file when empty), read once per path."""
    key = str(path or DEFAULT_RULES)
    if key not in _cache:
        _cache[key] = UploadRules.load(key)
    return _cache[key]
