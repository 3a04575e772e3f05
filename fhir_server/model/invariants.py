"""FHIRPath invariants of the R4 definitions, evaluated with fhirpathpy (for ``$validate``).

``resources/constraints.json`` (``scripts/derive_constraints.py``) lists the
invariants per element path; ``check_invariants`` walks the resource with the
compiled element tables and evaluates each invariant at every occurrence of its
element (http://hl7.org/fhir/R4/conformance-rules.html#constraints):

* result ``true`` or empty: satisfied;
* ``false``: an issue with the invariant's severity (``error`` or
  ``warning``), code ``invariant``, the key and human text, and the
  occurrence's expression (``Patient.contact[0]``);
* anything else, or an expression fhirpathpy cannot evaluate (an unsupported
  function such as ``htmlChecks()``): an ``information`` issue saying the
  invariant was not evaluated. It is never counted as passed silently.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from typing import Any, Callable

from ..errors import Issue
from . import definitions as defs

MAX_UNEVALUATED_REPORTS = 1  # per invariant key: say once that it could not be evaluated


def _has_value(inputs: list) -> list:
    return [len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], (dict, list))]


XHTML_NS = "http://www.w3.org/1999/xhtml"
# Narrative rules (http://hl7.org/fhir/R4/narrative.html#xhtml): no active content, no styling of the page.
FORBIDDEN_TAGS = {"script", "form", "input", "button", "select", "textarea", "object", "embed", "applet", "iframe",
                  "frame", "frameset", "base", "link", "meta", "style", "head", "body", "html", "title"}


def _html_ok(div: Any) -> bool:
    if not isinstance(div, str):
        return False
    try:
        root = ET.fromstring(div)
    except ET.ParseError:
        return False
    if root.tag not in (f"{{{XHTML_NS}}}div", "div"):
        return False
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag in FORBIDDEN_TAGS:
            return False
        for name in el.attrib:
            if name.rsplit("}", 1)[-1].lower().startswith("on"):
                return False
        if el.attrib.get("href", "").strip().lower().startswith("javascript:"):
            return False
    return bool("".join(root.itertext()).strip()) or any(
        e.tag.rsplit("}", 1)[-1] == "img" for e in root.iter())


def _html_checks(inputs: list) -> list:
    return [len(inputs) == 1 and _html_ok(inputs[0])]


# Functions of FHIR's FHIRPath profile that fhirpathpy lacks (http://hl7.org/fhir/R4/fhirpath.html#functions).
USER_FUNCTIONS = {"hasValue": {"fn": _has_value, "arity": {0: []}},
                  "htmlChecks": {"fn": _html_checks, "arity": {0: []}}}
# `x is Boolean` on a FHIR primitive: FHIR primitives convert implicitly to the System types
# (http://hl7.org/fhir/R4/fhirpath.html#types); fhirpathpy only matches the FHIR type name.
_SYSTEM_TYPE = re.compile(r"\b(is|as) (Boolean|String|Integer|Decimal|Date|DateTime|Time)\b")
_FHIR_NAME = {"Boolean": "boolean", "String": "string", "Integer": "integer", "Decimal": "decimal", "Date": "date",
              "DateTime": "dateTime", "Time": "time"}
# Best practice, not a rule for contained resources (their narrative is the container's).
CONTAINED_EXEMPT = {"dom-6"}


@lru_cache(maxsize=1)
def constraints() -> dict[str, list[list[str]]]:
    return json.loads((defs.RESOURCES_DIR / "constraints.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=4096)
def _compiled(expression: str) -> Callable | Exception:
    import fhirpathpy
    from fhirpathpy.models import models

    expression = _SYSTEM_TYPE.sub(lambda m: f"{m.group(1)} {_FHIR_NAME[m.group(2)]}", expression)
    try:
        return fhirpathpy.compile(expression, models["r4"],
                                  {"userInvocationTable": USER_FUNCTIONS, "traceFn": _no_trace})
    except Exception as exc:  # the parser rejects the expression
        return exc


def _no_trace(*_args) -> None:
    """Invariants call trace(); their output is not wanted on stdout."""


def _typed(node: Any, base: str) -> Any:
    """The node as fhirpathpy's typed node of element path / type `base` (so choice types resolve)."""
    from fhirpathpy.engine.nodes import ResourceNode

    return ResourceNode.create_node(node, base)


class _Checker:
    def __init__(self, root: dict) -> None:
        self.root = root
        self.issues: list[Issue] = []
        self.unevaluated: dict[str, int] = {}
        self.table = constraints()

    def evaluate(self, rows: list[list[str]], base: str, node: Any, path: str, resource: dict,
                 contained: bool = False) -> None:
        for key, severity, human, expression in rows:
            if contained and key in CONTAINED_EXEMPT:
                continue
            fn = _compiled(expression)
            result: Any
            if isinstance(fn, Exception):
                result = fn
            else:
                try:
                    target = node if node is resource else _typed(node, base)
                    result = fn(target, {"resource": resource, "rootResource": self.root})
                except Exception as exc:  # unsupported function, type error inside fhirpathpy
                    result = exc
            if result == [] or result == [True]:
                continue
            if result == [False]:
                self.issues.append(Issue(severity if severity in ("error", "warning") else "error", "invariant",
                                         f"{key}: {human}", [path]))
                continue
            if self.unevaluated.get(key, 0) >= MAX_UNEVALUATED_REPORTS:
                continue
            self.unevaluated[key] = self.unevaluated.get(key, 0) + 1
            why = f"{type(result).__name__}: {result}" if isinstance(result, Exception) else f"result {result!r} is not a boolean"
            self.issues.append(Issue("information", "informational",
                                     f"Invariant {key} was not evaluated ({why[:200]}); expression: {expression}", [path]))

    def resource(self, res: dict, path: str, contained: bool = False) -> None:
        rt = res.get("resourceType")
        struct = defs.struct_for(rt) if isinstance(rt, str) else None
        if struct is None:
            return
        self.evaluate(self.table.get(rt, []), rt, res, path, res, contained)
        self.walk(res, struct, path, res)

    def walk(self, node: dict, struct: defs.Struct, path: str, resource: dict) -> None:
        for key, value in node.items():
            info = struct.elements.get(key)
            if info is None or info.kind == defs.PRIMITIVE_EXT:
                continue
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            element_path = f"{struct.name}.{info.choice or info.name}"
            rows = self.table.get(element_path)
            for i, item in items:
                ipath = f"{path}.{info.name}" + (f"[{i}]" if i is not None else "")
                if not isinstance(item, dict):
                    if rows and item is not None:
                        self.evaluate(rows, element_path, item, ipath, resource)
                    continue
                if info.kind == defs.RESOURCE:
                    self.resource(item, ipath, contained=info.name == "contained")
                    continue
                nested = info.struct
                is_datatype = nested is not None and nested.name == info.type
                base = info.type if is_datatype else element_path
                if rows:
                    self.evaluate(rows, base, item, ipath, resource)
                if is_datatype and info.type in self.table:
                    self.evaluate(self.table[info.type], info.type, item, ipath, resource)
                if nested is not None:
                    self.walk(item, nested, ipath, resource)


def check_invariants(resource: dict) -> list[Issue]:
    """Every invariant of the base definitions, at every occurrence, over a structurally valid resource."""
    checker = _Checker(resource)
    checker.resource(resource, str(resource.get("resourceType")))
    return checker.issues
