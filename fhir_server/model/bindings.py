"""Terminology bindings of the R4 base definitions, checked in the strict walk.

``terminology/bindings.json`` (``scripts/derive_terminology.py``) lists each
coded element's binding and the expansion of the bound value set; here each
becomes a ``Binding`` attached to its ``ElementInfo`` so a check is a set
lookup per coded value (http://hl7.org/fhir/R4/terminologies.html#strength):

* ``required``: a code outside the value set is an error (issue code
  ``code-invalid``); for a CodeableConcept at least one coding must be in it.
* ``extensible`` / ``preferred``: a code outside the value set is a warning.

Value sets the derive script cannot enumerate (``open``: MIME types,
languages, currencies, UCUM) are not checked here.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import Issue


class Binding:
    __slots__ = ("strength", "url", "codes", "pairs", "required")

    def __init__(self, strength: str, url: str, expansion: dict[str, list[str]]) -> None:
        self.strength = strength
        self.required = strength == "required"
        self.url = url
        self.codes = frozenset(c for codes in expansion.values() for c in codes)
        self.pairs = frozenset((s, c) for s, codes in expansion.items() for c in codes)

    def __repr__(self) -> str:  # pragma: no cover
        return f"<Binding {self.strength} {self.url}>"


@lru_cache(maxsize=1)
def binding_table() -> dict[str, Binding]:
    """Element path (``Patient.gender``, ``Identifier.use``, ``Observation.value[x]``) -> Binding."""
    from ..terminology.package import binding_tables

    raw = binding_tables()
    shared: dict[tuple[str, str], Binding] = {}
    out: dict[str, Binding] = {}
    for path, (strength, url) in raw["bindings"].items():
        expansion = raw["valueSets"].get(url)
        if expansion is None:
            continue  # open value set: not checkable by lookup
        key = (strength, url)
        if key not in shared:
            shared[key] = Binding(strength, url, expansion)
        out[path] = shared[key]
    return out


def _issue(binding: Binding, message: str, path: str) -> Issue:
    if binding.required:
        return Issue("error", "code-invalid", message, [path])
    return Issue("warning", "code-invalid", message, [path])


def check_code(value, binding: Binding, type_: str, path: str, issues: list) -> None:
    """A primitive (code/string/uri) bound to a value set."""
    if type(value) is str and value and value not in binding.codes:
        issues.append(_issue(binding, f"The code '{value}' is not in the {binding.strength} value set "
                                      f"{binding.url}", path))


def _coding_ok(coding, binding: Binding) -> bool:
    code = coding.get("code")
    if type(code) is not str:
        return False
    system = coding.get("system")
    if system is None:
        return code in binding.codes
    return (system, code) in binding.pairs


def check_complex(value, binding: Binding, type_: str, path: str, issues: list) -> None:
    """A Coding or CodeableConcept bound to a value set."""
    if type(value) is not dict:
        return
    if type_ == "Coding":
        if ("code" in value or "system" in value) and not _coding_ok(value, binding):
            shown = f"{value.get('system') or ''}|{value.get('code') or ''}"
            issues.append(_issue(binding, f"The coding '{shown}' is not in the {binding.strength} value set "
                                          f"{binding.url}", path))
        return
    codings = value.get("coding")
    if type(codings) is not list or not codings:
        if binding.required:
            issues.append(_issue(binding, f"A coding from the required value set {binding.url} is needed "
                                          f"(text alone is not enough)", path))
        return
    if any(type(c) is dict and _coding_ok(c, binding) for c in codings):
        return
    shown = ", ".join(f"{c.get('system') or ''}|{c.get('code') or ''}" for c in codings if type(c) is dict)
    issues.append(_issue(binding, f"None of the codings ({shown}) is in the {binding.strength} value set "
                                  f"{binding.url}", path))
