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


_MISSING = object()


@lru_cache(maxsize=None)
def _choice_keys(name: str) -> dict[str, str]:
    """JSON key -> type suffix for every choice form of ``name`` (``value`` -> {"valueQuantity": "Quantity", ...}).

    ``k in _choice_keys(name)`` is exactly ``k[len(name):] in CHOICE_TYPES`` after the ``name`` prefix,
    as one hash lookup instead of a prefix test per key.
    """
    return {name + t: t for t in CHOICE_TYPES}


def _field_of(node: dict, name: str, choices: dict[str, str], out: list[Item]) -> None:
    v = node.get(name, _MISSING)
    if v is not _MISSING:
        if isinstance(v, list):
            out.extend([(x, None) for x in v])
        else:
            out.append((v, None))
        return
    for k in node:
        t = choices.get(k)
        if t is not None:
            out.append((node[k], t))


def _field(items: list[Item], name: str) -> list[Item]:
    """``items.name``: a list is flattened; an absent name matches its choice forms (``valueQuantity``)."""
    choices = _choice_keys(name)
    out: list[Item] = []
    for node, _ in items:
        if isinstance(node, dict):
            _field_of(node, name, choices, out)
    return out


# ---------------------------------------------------------------- compiled steps
#
# A parsed path is a list of steps; each is compiled once into a function from the
# current collection to the next, so evaluation does no dispatch on step kinds.

PathFn = Callable[[Any], list[Item]]
StepFn = Callable[[list[Item]], list[Item]]


def _step_field(name: str) -> StepFn:
    choices = _choice_keys(name)

    def step(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for node, _ in items:
            if isinstance(node, dict):
                _field_of(node, name, choices, out)
        return out

    return step


def _step_as(type_name: str) -> StepFn:
    t = type_name.lower()
    return lambda items: [(v, h) for v, h in items if h is None or h.lower() == t]


def _step_is(type_name: str) -> StepFn:
    def step(items: list[Item]) -> list[Item]:
        keep = []
        for v, h in items:
            if isinstance(v, dict):
                ref = v.get("reference")
                rt = split_type_id(ref)[0] if isinstance(ref, str) else None
                if rt is None:
                    rt = v.get("type")
                if rt == type_name:
                    keep.append((v, h))
        return keep

    return step


def _step_eq(field: str, literal: str) -> StepFn:
    return lambda items: [(v, h) for v, h in items if isinstance(v, dict) and v.get(field) == literal]


def _step_ext(url: str) -> StepFn:
    def step(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for v, _ in items:
            if isinstance(v, dict):
                out.extend((e, None) for e in v.get("extension", ()) if e.get("url") == url)
        return out

    return step


def _step_index(n: int) -> StepFn:
    return lambda items: items[n : n + 1]


_STEP_MAKERS: dict[str, Callable[..., StepFn]] = {
    "field": _step_field, "as": _step_as, "is": _step_is, "eq": _step_eq, "ext": _step_ext, "index": _step_index,
}


def _compile_root(steps: list[tuple]) -> tuple[PathFn, int]:
    """The function for the leading step(s) of a path, and how many steps it covers.

    A type name root followed by a field (``Patient.name``) is fused into one call.
    """
    name = steps[0][1]
    if name[0].isupper():
        any_type = name in ("Resource", "DomainResource")
        if len(steps) > 1 and steps[1][0] == "field":
            field = steps[1][1]
            choices = _choice_keys(field)

            def root_field(node: Any) -> list[Item]:
                if not any_type and node.get("resourceType") != name:
                    return []
                if not isinstance(node, dict):
                    return []
                v = node.get(field, _MISSING)
                if v is not _MISSING:
                    if isinstance(v, list):
                        return [(x, None) for x in v]
                    return [(v, None)]
                return [(node[k], choices[k]) for k in node if k in choices]

            return root_field, 2

        def root(node: Any) -> list[Item]:
            if any_type or node.get("resourceType") == name:
                return [(node, None)]
            return []

        return root, 1

    choices = _choice_keys(name)

    def root_child(node: Any) -> list[Item]:
        out: list[Item] = []
        if isinstance(node, dict):
            _field_of(node, name, choices, out)
        return out

    return root_child, 1


def _compile_path(steps: list[tuple]) -> PathFn:
    first, used = _compile_root(steps)
    rest = tuple(_STEP_MAKERS[s[0]](*s[1:]) for s in steps[used:])
    if not rest:
        return first
    if len(rest) == 1:
        (only,) = rest

        def run1(node: Any) -> list[Item]:
            items = first(node)
            return only(items) if items else items

        return run1

    def run(node: Any) -> list[Item]:
        items = first(node)
        for f in rest:
            if not items:
                return items
            items = f(items)
        return items

    return run


def _path_keys(steps: list[tuple]) -> frozenset[str] | None:
    """Keys of the start node of which one must be present for the path to yield anything (None: unknown).

    The first field ``name`` is found under ``name`` itself or a choice key ``name<Type>``;
    when an ``as``/``ofType`` follows at once, only the matching choice key can survive it.
    """
    i = 0
    name = steps[0][1]
    if name[0].isupper():
        if len(steps) < 2 or steps[1][0] != "field":
            return None
        i = 1
        name = steps[1][1]
    choices = _choice_keys(name)
    if i + 1 < len(steps) and steps[i + 1][0] == "as":
        t = steps[i + 1][1].lower()
        return frozenset([name, *(k for k, typ in choices.items() if typ.lower() == t)])
    return frozenset(choices) | {name}


def bare_root(expr: str) -> bool:
    """Whether ``expr`` is a single type name (``Observation``): at most one node, the resource itself."""
    paths = _parse(expr)
    return paths is not None and len(paths) == 1 and len(paths[0]) == 1 and paths[0][0][1][0].isupper()


Evaluator = Callable[[Any, dict], list[Item]]


def _parse(expr: str) -> list[list[tuple]] | None:
    try:
        parser = _Parser(expr)
        paths = parser.union()
        if parser.i != len(parser.toks):
            raise Unsupported("trailing tokens")
    except (Unsupported, ValueError):
        return None
    return paths


# `X.exists() and X != false` (Patient.deceased): true when X is there and is not the boolean false.
_EXISTS_NOT_FALSE = re.compile(r"^(?P<path>[A-Za-z][\w.]*)\.exists\(\) and (?P=path) != false$")


def _exists_not_false(path: str) -> Evaluator | None:
    paths = _parse(path)
    if paths is None or len(paths) != 1:
        return None
    fn = _compile_path(paths[0])

    def run(node: Any, resource: dict) -> list[Item]:
        items = fn(node)
        # FHIRPath `!=` on a one-item collection compares the value; any other size is unequal to `false`.
        return [(bool(items) and not (len(items) == 1 and items[0][0] is False), None)]

    return run


@lru_cache(maxsize=4096)
def compile_expression(expr: str) -> Evaluator:
    """Compile once: the fast walker when the shape allows, else fhirpathpy."""
    m = _EXISTS_NOT_FALSE.match(expr)
    if m and (fast := _exists_not_false(m["path"])) is not None:
        return fast
    paths = _parse(expr)
    if paths is None:
        return _fallback(expr)
    fns = tuple(_compile_path(steps) for steps in paths)
    if len(fns) == 1:
        (fn,) = fns
        return lambda node, resource: fn(node)

    def run(node: Any, resource: dict) -> list[Item]:
        out: list[Item] = []
        for f in fns:
            out.extend(f(node))
        return out

    return run


@lru_cache(maxsize=4096)
def trigger_keys(expr: str) -> frozenset[str] | None:
    """Top-level keys of which at least one must be present for ``expr`` to yield anything.

    Lets extraction skip, with one set lookup per resource key, the many parameters
    whose element a resource does not have. None when that cannot be known (fhirpathpy
    expressions such as ``x.exists()`` yield ``false`` on an empty input).
    """
    paths = _parse(expr)
    if paths is None:
        return None
    keys: set[str] = set()
    for steps in paths:
        k = _path_keys(steps)
        if k is None:
            return None
        keys |= k
    return frozenset(keys)


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
    m = _EXISTS_NOT_FALSE.match(expr)
    if m:
        expr = m["path"]
    try:
        p = _Parser(expr)
        p.union()
        return p.i == len(p.toks)
    except (Unsupported, ValueError):
        return False
