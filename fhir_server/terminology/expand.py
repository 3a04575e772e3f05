"""ValueSet expansion (http://hl7.org/fhir/R4/valueset-operation-expand.html).

``expand(value_set, resolver)`` evaluates ``compose``: each include gives the
concepts of a system (all of them, a listed set, or those passing the filters,
ANDed) intersected with any imported value sets; includes are ORed, then the
excludes are removed. Filters: ``is-a``, ``descendent-of``, ``is-not-a``,
``generalizes``, ``=``, ``in``, ``not-in``, ``regex`` and ``exists`` on the
``concept``/``code`` property or a concept property. A ValueSet that has an
``expansion`` but no ``compose`` is taken as its expansion.

Failures raise ``TerminologyError`` with an OperationOutcome issue code:
``not-found`` (an unknown system or value set), ``not-supported`` (an unknown
filter), ``too-costly`` (a system that cannot be enumerated, or more than
``max_size`` concepts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from .codesystem import CodeSystemIndex, Concept

MAX_EXPANSION = 100_000


class TerminologyError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Resolver(Protocol):
    def code_system(self, url: str, version: str | None = None) -> CodeSystemIndex | None: ...

    def value_set(self, url: str, version: str | None = None) -> dict | None: ...


@dataclass(slots=True)
class Entry:
    """One concept in an expansion."""

    system: str
    code: str
    display: str | None = None
    version: str | None = None
    concept: Concept | None = None  # the CodeSystem's concept, when the system is known
    designations: list | None = None  # from the compose concept list

    @property
    def key(self) -> tuple[str, str]:
        return self.system, self.code


def split_canonical(url: str) -> tuple[str, str | None]:
    """'http://x/ValueSet/y|4.0.1' -> ('http://x/ValueSet/y', '4.0.1')."""
    base, _, version = url.partition("|")
    return base, version or None


class _Expander:
    def __init__(self, resolver: Resolver, max_size: int) -> None:
        self.resolver = resolver
        self.max_size = max_size
        self.stack: list[str] = []

    def value_set_entries(self, vs: dict) -> dict[tuple[str, str], Entry]:
        url = vs.get("url") or "(inline)"
        if url in self.stack:
            raise TerminologyError("processing", f"ValueSet {url} imports itself")
        self.stack.append(url)
        try:
            compose = vs.get("compose")
            if not compose:
                if isinstance(vs.get("expansion"), dict):
                    return self._from_expansion(vs["expansion"].get("contains") or [])
                raise TerminologyError("not-supported", f"ValueSet {url} has neither compose nor expansion")
            out: dict[tuple[str, str], Entry] = {}
            for inc in compose.get("include") or []:
                for e in self._set(inc):
                    out.setdefault(e.key, e)
                if len(out) > self.max_size:
                    raise TerminologyError("too-costly", f"ValueSet {url} has more than {self.max_size} concepts")
            for exc in compose.get("exclude") or []:
                for e in self._set(exc):
                    out.pop(e.key, None)
            if compose.get("inactive") is False:
                out = {k: e for k, e in out.items() if not (e.concept and e.concept.inactive)}
            return out
        finally:
            self.stack.pop()

    def _from_expansion(self, contains: list) -> dict[tuple[str, str], Entry]:
        out: dict[tuple[str, str], Entry] = {}
        for c in contains:
            if isinstance(c, dict) and c.get("code") and c.get("system"):
                out.setdefault((c["system"], c["code"]), Entry(c["system"], c["code"], c.get("display"), c.get("version")))
            out.update({k: v for k, v in self._from_expansion(c.get("contains") or []).items() if k not in out})
        return out

    def _imported(self, urls: list[str]) -> dict[tuple[str, str], Entry] | None:
        result: dict[tuple[str, str], Entry] | None = None
        for ref in urls:
            base, version = split_canonical(ref)
            vs = self.resolver.value_set(base, version)
            if vs is None:
                raise TerminologyError("not-found", f"ValueSet {ref} is not known to this server")
            entries = self.value_set_entries(vs)
            result = entries if result is None else {k: v for k, v in result.items() if k in entries}
        return result

    def _set(self, inc: dict) -> list[Entry]:
        """The concepts one include/exclude element selects."""
        imported = self._imported(inc.get("valueSet") or [])
        system = inc.get("system")
        if not system:
            return list((imported or {}).values())
        version = inc.get("version")
        cs = self.resolver.code_system(system, version)
        entries = self._system_entries(system, version, cs, inc)
        if imported is not None:
            entries = [e for e in entries if e.key in imported]
        return entries

    def _system_entries(self, system: str, version: str | None, cs: CodeSystemIndex | None, inc: dict) -> list[Entry]:
        ver = version or (cs.version if cs else None)
        if inc.get("concept"):
            out = []
            for c in inc["concept"]:
                if not isinstance(c, dict) or not isinstance(c.get("code"), str):
                    continue
                known = cs.get(c["code"]) if cs else None
                if cs is not None and cs.complete and known is None:
                    continue  # not a code of the system: not in the value set
                out.append(Entry(system, known.code if known else c["code"], c.get("display") or (known.display if known else None),
                                 ver, known, c.get("designation")))
            return out
        if cs is None:
            raise TerminologyError("not-found", f"CodeSystem {system} is not known to this server, so it cannot be expanded")
        if inc.get("filter"):
            codes: set[str] | None = None
            for f in inc["filter"]:
                matched = self._filter(cs, f)
                codes = matched if codes is None else codes & matched
            ordered = [c for c in cs.concepts if c in (codes or set())]
        else:
            if not cs.complete:
                raise TerminologyError("too-costly", f"CodeSystem {system} is not enumerable here (content = {cs.content})")
            ordered = list(cs.concepts)
        if len(ordered) > self.max_size:
            raise TerminologyError("too-costly", f"{system} selects more than {self.max_size} concepts")
        return [Entry(system, code, cs.concepts[code].display, ver, cs.concepts[code]) for code in ordered]

    def _filter(self, cs: CodeSystemIndex, f: dict) -> set[str]:
        prop, op, value = f.get("property"), f.get("op"), f.get("value")
        if not isinstance(value, str) or not isinstance(op, str):
            raise TerminologyError("invalid", "A compose filter needs op and value")
        hierarchical = prop in ("concept", "code")
        if hierarchical and op in ("is-a", "descendent-of", "is-not-a", "generalizes"):
            root = cs.get(value)
            if root is None:
                return set(cs.concepts) if op == "is-not-a" else set()
            below = set(cs.descendants(root.code))
            if op == "is-a":
                return below | {root.code}
            if op == "descendent-of":
                return below
            if op == "generalizes":
                return set(cs.ancestors(root.code)) | {root.code}
            return set(cs.concepts) - below - {root.code}
        if op == "regex":
            try:
                rx = re.compile(value)
            except re.error as exc:
                raise TerminologyError("invalid", f"Invalid regex filter '{value}': {exc}") from None
            if hierarchical:
                return {c for c in cs.concepts if rx.fullmatch(c)}
            return {c.code for c in cs.concepts.values() if any(rx.fullmatch(str(v)) for v in c.property_values(prop))}
        if op in ("=", "in", "not-in"):
            wanted = {value} if op == "=" else {v.strip() for v in value.split(",")}
            if hierarchical:
                hit = {c for c in cs.concepts if c in wanted}
            else:
                hit = {c.code for c in cs.concepts.values() if any(_text(v) in wanted for v in c.property_values(prop))}
            return set(cs.concepts) - hit if op == "not-in" else hit
        if op == "exists":
            has = {c.code for c in cs.concepts.values() if c.property_values(prop)}
            return has if value == "true" else set(cs.concepts) - has
        raise TerminologyError("not-supported", f"Filter op '{op}' on property '{prop}' is not supported")


def _text(v) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, dict):  # valueCoding
        return str(v.get("code"))
    return str(v)


def expand(value_set: dict, resolver: Resolver, max_size: int = MAX_EXPANSION) -> list[Entry]:
    """Every concept of the value set, in compose order, each (system, code) once."""
    return list(_Expander(resolver, max_size).value_set_entries(value_set).values())


def contains(value_set: dict, resolver: Resolver, system: str | None, code: str) -> Entry | None:
    """The expansion entry for (system, code); system None matches any system."""
    for e in expand(value_set, resolver):
        if e.code == code and (system is None or e.system == system):
            return e
    return None
