"""A fast evaluator for the FHIRPath shapes SearchParameters actually use.

fhirpathpy is a full interpreter and costs ~100x more per call; nearly all R4
search expressions are dotted paths, unions, type casts and simple `where`
filters, which this module walks directly over the JSON dicts. Anything else
is compiled once with fhirpathpy and cached.

Each result item is ``(value, type_hint)`` where the hint is the concrete type
suffix of a choice element (``valueQuantity`` -> "Quantity"), or None.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any, Callable

from .values import split_type_id

log = logging.getLogger(__name__)

Item = tuple[Any, str | None]

_TOKEN_RE = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<id>[A-Za-z_%][A-Za-z0-9_]*)|(?P<op>[.()\[\]=|]))")


class Unsupported(Exception):
    """The expression is outside the fast subset; use fhirpathpy."""


def _tokenize(expr: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m or m.end() == pos:
            raise Unsupported(expr)
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, expr: str):
        self.toks = _tokenize(expr)
        self.i = 0

    def peek(self, val: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        return val is None or self.toks[self.i][1] == val

    def take(self, kind: str | None = None, val: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise Unsupported("eof")
        k, v = self.toks[self.i]
        if (kind and k != kind) or (val and v != val):
            raise Unsupported(f"unexpected {v}")
        self.i += 1
        return v

    def union(self) -> list[list[tuple]]:
        paths = [self.path()]
        while self.peek("|"):
            self.take()
            paths.append(self.path())
        return paths

    def path(self) -> list[tuple]:
        if self.peek("("):
            self.take()
            steps = self.path()
            if self.peek("as"):
                self.take()
                steps = steps + [("as", self.take("id"))]
            self.take(val=")")
        else:
            root = self.take("id")
            if root.startswith("%"):
                raise Unsupported(root)
            steps = [("root", root)]
            self.index(steps)
        while self.peek("."):
            self.take()
            steps.extend(self.step())
        if self.peek("as"):
            self.take()
            steps.append(("as", self.take("id")))
        return steps

    def index(self, steps: list) -> None:
        if self.peek("["):
            self.take()
            n = int(self.take("num"))
            self.take(val="]")
            steps.append(("index", n))

    def step(self) -> list[tuple]:
        name = self.take("id")
        if not self.peek("("):
            steps = [("field", name)]
            self.index(steps)
            return steps
        self.take()
        if name in ("as", "ofType"):
            t = self.take("id")
            self.take(val=")")
            return [("as", t)]
        if name == "first":
            self.take(val=")")
            return [("index", 0)]
        if name == "extension":
            url = self.take("str")[1:-1]
            self.take(val=")")
            return [("ext", url)]
        if name == "where":
            if self.peek("resolve"):
                self.take()
                self.take(val="(")
                self.take(val=")")
                self.take(val="is")
                t = self.take("id")
                self.take(val=")")
                return [("is", t)]
            field = self.take("id")
            self.take(val="=")
            lit = self.take("str")[1:-1]
            self.take(val=")")
            return [("eq", field, lit)]
        raise Unsupported(name)


# Type names that can follow a choice element's base name in JSON (valueQuantity, onsetAge...);
# checking them keeps `code` from matching an unrelated element such as `codeFilter`.
CHOICE_TYPES = frozenset(
    "Base64Binary Boolean Canonical Code Date DateTime Decimal Id Instant Integer Markdown Oid PositiveInt "
    "String Time UnsignedInt Uri Url Uuid Address Age Annotation Attachment CodeableConcept Coding "
    "ContactPoint Count Distance Duration HumanName Identifier Money Period Quantity Range Ratio Reference "
    "SampledData Signature Timing ContactDetail Contributor DataRequirement Expression ParameterDefinition "
    "RelatedArtifact TriggerDefinition UsageContext Dosage Meta".split()
)


def _field(items: list[Item], name: str) -> list[Item]:
    out: list[Item] = []
    for node, _ in items:
        if not isinstance(node, dict):
            continue
        if name in node:
            v = node[name]
            if isinstance(v, list):
                out.extend((x, None) for x in v)
            else:
                out.append((v, None))
            continue
        n = len(name)
        for k, v in node.items():
            if len(k) > n and k.startswith(name) and k[n].isupper() and k[n:] in CHOICE_TYPES:
                out.append((v, k[n:]))
    return out


def _run(steps: list[tuple], resource: dict) -> list[Item]:
    items: list[Item] = []
    first = steps[0]
    name = first[1]
    if name[0].isupper():
        if name in ("Resource", "DomainResource") or resource.get("resourceType") == name:
            items = [(resource, None)]
        else:
            return []
    else:
        items = _field([(resource, None)], name)
    for step in steps[1:]:
        kind = step[0]
        if kind == "field":
            items = _field(items, step[1])
        elif kind == "as":
            t = step[1].lower()
            items = [(v, h) for v, h in items if h is None or h.lower() == t]
        elif kind == "is":
            keep = []
            for v, h in items:
                if isinstance(v, dict):
                    ref = v.get("reference")
                    rt = split_type_id(ref)[0] if isinstance(ref, str) else None
                    if rt is None:
                        rt = v.get("type")
                    if rt == step[1]:
                        keep.append((v, h))
            items = keep
        elif kind == "eq":
            items = [(v, h) for v, h in items if isinstance(v, dict) and v.get(step[1]) == step[2]]
        elif kind == "ext":
            out = []
            for v, _ in items:
                if isinstance(v, dict):
                    out.extend((e, None) for e in v.get("extension", ()) if e.get("url") == step[1])
            items = out
        elif kind == "index":
            items = items[step[1] : step[1] + 1]
        if not items:
            return items
    return items


Evaluator = Callable[[Any, dict], list[Item]]


@lru_cache(maxsize=4096)
def compile_expression(expr: str) -> Evaluator:
    """Compile once: the fast walker when the shape allows, else fhirpathpy."""
    try:
        parser = _Parser(expr)
        paths = parser.union()
        if parser.i != len(parser.toks):
            raise Unsupported("trailing tokens")
    except (Unsupported, ValueError):
        return _fallback(expr)

    def run(node: Any, resource: dict) -> list[Item]:
        out: list[Item] = []
        for steps in paths:
            out.extend(_run(steps, node))
        return out

    return run


def _fallback(expr: str) -> Evaluator:
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    try:
        fn = fp_compile(expr, models["r4"])
    except Exception:  # noqa: BLE001 - a bad definition must never break writes
        log.warning("cannot compile search expression %r", expr, exc_info=True)
        return lambda node, resource: []

    def run(node: Any, resource: dict) -> list[Item]:
        res = fn(node, {"resource": resource, "rootResource": resource})
        return [(v, None) for v in res]

    return run


def evaluate(expr: str, resource: dict, node: Any = None) -> list[Item]:
    """Evaluate ``expr`` on ``node`` (default: the resource itself)."""
    return compile_expression(expr)(resource if node is None else node, resource)


def is_fast(expr: str) -> bool:
    try:
        p = _Parser(expr)
        p.union()
        return p.i == len(p.toks)
    except (Unsupported, ValueError):
        return False
