"""A CodeSystem resource compiled for look-ups: concepts by code and the is-a hierarchy.

Follows http://hl7.org/fhir/R4/codesystem.html: a concept's children are the
concepts nested in ``concept.concept`` and those linked by the ``parent`` /
``child`` / ``subsumedBy`` properties (hierarchyMeaning ``is-a`` is assumed for
subsumption, as the R4 and THO code systems served here declare).
Codes compare exactly unless ``caseSensitive`` is false.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

PARENT_PROPS = ("parent", "subsumedBy")


@dataclass
class Concept:
    code: str
    display: str | None = None
    definition: str | None = None
    designations: list[dict] = field(default_factory=list)
    properties: list[dict] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    def property_values(self, code: str) -> list:
        """Values of property `code` (value[x] of each matching concept.property)."""
        out = []
        for p in self.properties:
            if p.get("code") == code:
                out.extend(v for k, v in p.items() if k.startswith("value"))
        return out

    @property
    def inactive(self) -> bool:
        return any(v in ("retired", "inactive") for v in self.property_values("status")) or \
            True in self.property_values("inactive")

    @property
    def abstract(self) -> bool:
        return True in self.property_values("notSelectable")


class CodeSystemIndex:
    """Concepts of one CodeSystem keyed by code; raises nothing, answers None for unknown codes."""

    def __init__(self, resource: dict) -> None:
        self.url: str | None = resource.get("url")
        self.version: str | None = resource.get("version")
        self.name: str | None = resource.get("name")
        self.content: str = resource.get("content") or "complete"
        self.case_sensitive: bool = resource.get("caseSensitive", True) is not False
        self.concepts: dict[str, Concept] = {}
        self._folded: dict[str, str] | None = None
        self._add(resource.get("concept") or [], None)
        for c in list(self.concepts.values()):
            for p in c.properties:
                code, value = p.get("code"), p.get("valueCode")
                if not isinstance(value, str) or value not in self.concepts:
                    continue
                if code in PARENT_PROPS:
                    self._link(value, c.code)
                elif code == "child":
                    self._link(c.code, value)

    def _add(self, concepts: list, parent: str | None) -> None:
        for raw in concepts:
            if not isinstance(raw, dict) or not isinstance(raw.get("code"), str):
                continue
            c = self.concepts.get(raw["code"])
            if c is None:
                c = self.concepts[raw["code"]] = Concept(
                    raw["code"], raw.get("display"), raw.get("definition"),
                    list(raw.get("designation") or []), list(raw.get("property") or []))
            if parent is not None:
                self._link(parent, c.code)
            self._add(raw.get("concept") or [], c.code)

    def _link(self, parent: str, child: str) -> None:
        if parent == child:
            return
        p, c = self.concepts[parent], self.concepts[child]
        if child not in p.children:
            p.children.append(child)
        if parent not in c.parents:
            c.parents.append(parent)

    @property
    def complete(self) -> bool:
        """All codes are listed (content = complete), so the system can be enumerated and checked."""
        return self.content == "complete"

    def get(self, code: str) -> Concept | None:
        c = self.concepts.get(code)
        if c is None and not self.case_sensitive:
            if self._folded is None:
                self._folded = {k.casefold(): k for k in self.concepts}
            real = self._folded.get(code.casefold())
            c = self.concepts.get(real) if real else None
        return c

    def descendants(self, code: str) -> Iterator[str]:
        """Every code below `code` (not itself), each once, breadth first."""
        seen = {code}
        queue = list(self.concepts[code].children) if code in self.concepts else []
        while queue:
            nxt = []
            for c in queue:
                if c in seen:
                    continue
                seen.add(c)
                yield c
                nxt.extend(self.concepts[c].children)
            queue = nxt

    def ancestors(self, code: str) -> Iterator[str]:
        """Every code above `code` (not itself), each once."""
        seen = {code}
        queue = list(self.concepts[code].parents) if code in self.concepts else []
        while queue:
            nxt = []
            for c in queue:
                if c in seen:
                    continue
                seen.add(c)
                yield c
                nxt.extend(self.concepts[c].parents)
            queue = nxt

    def subsumes(self, a: str, b: str) -> str:
        """$subsumes outcome of codeA=a, codeB=b: equivalent | subsumes | subsumed-by | not-subsumed."""
        a = self.get(a).code if self.get(a) else a
        b = self.get(b).code if self.get(b) else b
        if a == b:
            return "equivalent"
        if a in set(self.ancestors(b)):
            return "subsumes"
        if b in set(self.ancestors(a)):
            return "subsumed-by"
        return "not-subsumed"
