"""FHIR R4 element definitions, loaded once from the generated tables.

``resources/elements.json`` (made by ``scripts/derive_elements.py``) is the
raw, compact form.  Validation runs on every write, so on first use the
tables are compiled into per-structure dicts keyed by the exact JSON property
name (choice variants such as ``valueString`` and primitive-extension
siblings such as ``_birthDate`` expanded), letting the validator do one dict
lookup per property.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

RESOURCES_DIR = Path(__file__).resolve().parents[2] / "resources"

# JSON kind each primitive must have on the wire.
BOOL, INT, DEC, STR = "boolean", "integer", "decimal", "string"
INT_RANGES = {
    "integer": (-(2**31), 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
}

# Types whose values are checked against a bound value set.
BOUND_TYPES = frozenset({"code", "string", "uri", "Coding", "CodeableConcept"})

# Element kinds in a compiled structure.
PRIMITIVE, COMPLEX, RESOURCE, PRIMITIVE_EXT = 0, 1, 2, 3


class ElementInfo:
    """One JSON property of a structure, ready for validation."""

    __slots__ = ("name", "type", "array", "kind", "json_kind", "struct", "choice", "target", "binding")

    def __init__(self, name: str, type_: str, array: bool, kind: int) -> None:
        self.name = name  # FHIRPath name used in expressions (no leading "_")
        self.type = type_  # FHIR type code
        self.array = array
        self.kind = kind
        self.json_kind: str | None = None  # for primitives: BOOL/INT/DEC/STR
        self.struct: Struct | None = None  # for complex / backbone / primitive-extension
        self.choice: str | None = None  # "value[x]" for choice variants
        self.target: ElementInfo | None = None  # for "_x": the primitive element x
        self.binding = None  # bindings.Binding of a coded element (required/extensible/preferred)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<ElementInfo {self.name}:{self.type}{'[]' if self.array else ''}>"


class Struct:
    """A resource, datatype or backbone element: its JSON properties and required elements."""

    __slots__ = ("name", "elements", "required", "has_choice")

    def __init__(self, name: str) -> None:
        self.name = name
        self.elements: dict[str, ElementInfo] = {}
        # (element name for messages, JSON keys any of which satisfies it)
        self.required: list[tuple[str, tuple[str, ...]]] = []
        self.has_choice = False

    def __repr__(self) -> str:  # pragma: no cover
        return f"<Struct {self.name}>"


@lru_cache(maxsize=1)
def raw_elements() -> dict:
    """The compact element table as generated (see scripts/derive_elements.py)."""
    return json.loads((RESOURCES_DIR / "elements.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def resource_types() -> frozenset[str]:
    """Resource types this server serves (in both R4 and the R4B model library)."""
    return frozenset(json.loads((RESOURCES_DIR / "resource-types.json").read_text(encoding="utf-8")))


def r4_resource_types() -> frozenset[str]:
    """Every resource type with an R4 definition (served or not)."""
    return frozenset(raw_elements()["resources"])


def primitive_types() -> frozenset[str]:
    return frozenset(raw_elements()["primitives"])


def _json_kind(primitive: str) -> str:
    if primitive == "boolean":
        return BOOL
    if primitive in INT_RANGES:
        return INT
    if primitive == "decimal":
        return DEC
    return STR  # every other R4 primitive, including xhtml, is a JSON string


class _Compiler:
    """Turns the raw table into linked Struct objects (cycles allowed)."""

    def __init__(self, raw: dict, bindings: dict | None = None) -> None:
        self.raw = raw
        self.bindings = bindings or {}
        self.primitives = set(raw["primitives"])
        self.structs: dict[str, Struct] = {}  # type name or backbone path -> Struct
        self.pending: list[tuple[Struct, dict, str]] = []

    def compile_all(self) -> dict[str, Struct]:
        for group in ("types", "resources"):
            for name, elements in self.raw[group].items():
                self._declare(name, elements)
        while self.pending:
            struct, elements, path = self.pending.pop()
            self._fill(struct, elements, path)
        return self.structs

    def _declare(self, path: str, elements: dict) -> Struct:
        struct = self.structs[path] = Struct(path)
        self.pending.append((struct, elements, path))
        for name, spec in elements.items():  # declare nested backbones up front for contentReference
            if "e" in spec:
                self._declare(f"{path}.{name}", spec["e"])
        return struct

    def _fill(self, struct: Struct, elements: dict, path: str) -> None:
        for name, spec in elements.items():
            array = spec.get("m") == "*"
            if "r" in spec:
                info = ElementInfo(name, "BackboneElement", array, COMPLEX)
                info.struct = self.structs[spec["r"]]
                struct.elements[name] = info
                keys: tuple[str, ...] = (name,)
            elif "c" in spec:
                struct.has_choice = True
                keys = ()
                for concrete, type_ in zip(spec["c"], spec["t"]):
                    info = self._typed(concrete, type_, array, f"{path}.{name}", spec)
                    info.choice = name
                    info.binding = self._binding(f"{path}.{name}", type_)
                    struct.elements[concrete] = info
                    keys += (concrete,)
                    if info.kind == PRIMITIVE:
                        keys += (self._add_ext(struct, info),)
            else:
                info = self._typed(name, spec["t"][0], array, f"{path}.{name}", spec)
                info.binding = self._binding(f"{path}.{name}", info.type)
                struct.elements[name] = info
                keys = (name,)
                if info.kind == PRIMITIVE:
                    keys += (self._add_ext(struct, info),)
            if spec.get("n"):
                struct.required.append((name, keys))

    def _binding(self, path: str, type_: str):
        if type_ in BOUND_TYPES:
            return self.bindings.get(path)
        return None

    def _typed(self, name: str, type_: str, array: bool, path: str, spec: dict) -> ElementInfo:
        if "e" in spec:
            info = ElementInfo(name, type_, array, COMPLEX)
            info.struct = self.structs[path]
        elif type_ in self.primitives:
            info = ElementInfo(name, type_, array, PRIMITIVE)
            info.json_kind = _json_kind(type_)
        elif type_ == "Resource":
            info = ElementInfo(name, type_, array, RESOURCE)
        else:
            info = ElementInfo(name, type_, array, COMPLEX)
            info.struct = self.structs[type_]
        return info

    def _add_ext(self, struct: Struct, prim: ElementInfo) -> str:
        key = "_" + prim.name
        ext = ElementInfo(prim.name, "Element", prim.array, PRIMITIVE_EXT)
        ext.struct = self.structs["Element"]
        ext.target = prim
        ext.choice = prim.choice
        struct.elements[key] = ext
        return key


@lru_cache(maxsize=1)
def structs() -> dict[str, Struct]:
    """All compiled structures by type name (and by backbone path)."""
    from .bindings import binding_table

    return _Compiler(raw_elements(), binding_table()).compile_all()


def struct_for(type_name: str) -> Struct | None:
    """Compiled structure of a resource type or complex datatype."""
    return structs().get(type_name)


def element(path: str) -> dict | None:
    """Raw spec of an element by dotted path, following datatypes and contentReferences.

    ``element("Patient.name.family")`` -> ``{"t": ["string"]}``;
    ``element("Observation.value[x]")`` gives the choice spec.
    """
    raw = raw_elements()
    head, *rest = path.split(".")
    table: dict[str, Any] | None = raw["resources"].get(head) or raw["types"].get(head)
    spec: dict | None = None
    for part in rest:
        if table is None:
            return None
        spec = table.get(part)
        if spec is None:
            return None
        table = _children(spec)
    return spec


def _children(spec: dict) -> dict | None:
    raw = raw_elements()
    if "e" in spec:
        return spec["e"]
    if "r" in spec:
        ref = element(spec["r"])
        return _children(ref) if ref else None
    types = spec.get("t", [])
    if len(types) == 1:
        return raw["types"].get(types[0])
    return None


def element_types(path: str) -> list[str]:
    """Type codes of an element path (empty if unknown)."""
    spec = element(path)
    if spec is None:
        return []
    if "r" in spec:
        return ["BackboneElement"]
    return list(spec.get("t", []))


def is_repeating(path: str) -> bool:
    spec = element(path)
    return bool(spec and spec.get("m") == "*")
