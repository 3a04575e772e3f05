"""Rewriting the identities a transaction assigns into the resources it carries.

http://hl7.org/fhir/R4/http.html#trules: when an entry's `fullUrl` is a
`urn:uuid:`/`urn:oid:` (or an absolute URL the server replaces), the server
replaces that value, with the new relative reference `Type/id`, everywhere the
spec lists:

- `Reference.reference`;
- every element of type `uri`, `url`, `oid` or `uuid` (for example
  `Attachment.url` pointing at a Binary created in the same Bundle);
- `<a href="">` and `<img src="">` in the narrative (`Narrative.div`).

Elements of type `canonical` are not replaced. Conditional references
(`Patient?identifier=...`) are resolved to the one resource they match (412 when
zero or several). A `Reference.reference` that is still a `urn:uuid:` after
rewriting points at nothing in the Bundle: it is reported so the caller can
refuse the entry (400) instead of storing a dangling reference.

The walk is typed: it follows the R4 element definitions (`struct_for`), so it
knows which string is a `uri` and which a `canonical`, through backbone
elements, choice types (`valueUrl`), extensions and contained resources.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ..model.definitions import PRIMITIVE, RESOURCE, Struct, struct_for

URI_TYPES = frozenset({"uri", "url", "oid", "uuid"})
_NARRATIVE_LINK = re.compile(r"""(<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)

Resolver = Callable[[str], str]  # conditional reference "Type?query" -> "Type/id"


def rewrite(resource: Any, mapping: dict[str, str], resolve_conditional: Resolver | None) -> list[tuple[str, str]]:
    """Replace fullUrls per `mapping` (old value -> "Type/id") inside `resource`, in place.

    Returns the (FHIRPath-like element path, reference) of every `Reference.reference`
    that is a `urn:uuid:` no entry of the Bundle carries (empty when all resolve).
    Raises what `resolve_conditional` raises (FhirError 412) for a conditional reference.
    """
    if not isinstance(resource, dict):
        return []
    rtype = resource.get("resourceType")
    dangling: list[tuple[str, str]] = []
    walker = _Walker(mapping, resolve_conditional, dangling)
    struct = struct_for(rtype) if isinstance(rtype, str) else None
    if struct is None:  # unknown type: validation will refuse it; still rewrite plain references
        walker.untyped(resource, str(rtype))
    else:
        walker.walk(resource, struct, lambda: rtype)
    return dangling


class _Walker:
    def __init__(self, mapping: dict[str, str], resolve: Resolver | None, dangling: list[tuple[str, str]]):
        self.mapping = mapping
        self.resolve = resolve
        self.dangling = dangling

    def reference(self, node: dict, path: Callable[[], str]) -> None:
        ref = node.get("reference")
        if not isinstance(ref, str):
            return
        if ref in self.mapping:
            node["reference"] = self.mapping[ref]
        elif "?" in ref and self.resolve is not None and not ref.startswith(("http://", "https://", "#", "urn:")):
            resolved = self.mapping.get(ref) or self.resolve(ref)
            self.mapping[ref] = resolved
            node["reference"] = resolved
        elif ref.startswith("urn:uuid:"):
            self.dangling.append((f"{path()}.reference", ref))

    def walk(self, node: dict, struct: Struct, path: Callable[[], str]) -> None:
        """Paths are built only when reported (a closure per level): the walk visits
        every element of every resource of a Bundle and must stay cheap."""
        elements = struct.elements
        for key, value in node.items():
            info = elements.get(key)
            if info is None:
                continue
            kind = info.kind
            if kind == PRIMITIVE:
                if info.type in URI_TYPES or info.type == "xhtml":
                    if isinstance(value, list):
                        for i, item in enumerate(value):
                            new = self.primitive(info.type, item)
                            if new is not item:
                                value[i] = new
                    else:
                        new = self.primitive(info.type, value)
                        if new is not value:
                            node[key] = new
                continue
            many = isinstance(value, list)
            for i, item in enumerate(value if many else (value,)):
                if not isinstance(item, dict):
                    continue
                where = _child(path, key, i if many else None)
                if kind == RESOURCE:
                    inner = item.get("resourceType")
                    sub = struct_for(inner) if isinstance(inner, str) else None
                    if sub is not None:
                        self.walk(item, sub, where)
                    continue
                if info.type == "Reference":
                    self.reference(item, where)
                if info.struct is not None:  # complex, backbone, or a primitive's `_x` (extensions)
                    self.walk(item, info.struct, where)

    def primitive(self, type_code: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if type_code in URI_TYPES:
            return self.mapping.get(value, value)
        if type_code == "xhtml" and self.mapping:
            return _NARRATIVE_LINK.sub(lambda m: m.group(1) + m.group(2) + self.mapping.get(m.group(3), m.group(3)) + m.group(2), value)
        return value

    def untyped(self, node: Any, path: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                self.reference(node, lambda: path)
            for k, v in node.items():
                self.untyped(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                self.untyped(v, f"{path}[{i}]")


def _child(parent: Callable[[], str], key: str, index: int | None) -> Callable[[], str]:
    return lambda: f"{parent()}.{key}" + (f"[{index}]" if index is not None else "")


__all__ = ["rewrite", "URI_TYPES"]
