"""Strict validation of incoming FHIR R4 JSON resources.

Two passes, both producing OperationOutcome issues with FHIRPath-style
``expression`` paths (``Patient.identifier[0].system``):

1. a strict walk over the JSON against the R4 element tables (unknown
   elements, JSON kinds of primitives, array cardinality, empty values,
   primitive-extension siblings, choice types, required elements, nested
   resources).  The pydantic models are lax (they accept ``"yes"`` for a
   boolean and ``"2"`` for an integer), hence this pass.
2. the fhir.resources R4B pydantic model, for value formats (dates, ids,
   codes) and the invariants it implements.  Issues at a path the walk already
   reported are dropped.

The wire format is R4 4.0.1; the few places where the R4B model disagrees
with R4 are reconciled before the model step: Evidence and EvidenceVariable
(reshaped in R4B) get the walk only, and ``_r4b_compat`` adapts a copy of
content using R4's Meta-typed choice elements or nesting those two types.

Issue codes: ``structure`` for unknown elements and JSON shape errors
(array vs single value, empty object/array, null), ``value`` for bad
primitive values, ``required`` for missing required elements,
``not-supported`` for unknown resource types, ``invalid`` otherwise.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import Issue
from . import definitions as defs
from .bindings import check_code, check_complex
from .formats import PATTERNS, format_error
from .definitions import BOOL, DEC, INT, INT_RANGES, PRIMITIVE, PRIMITIVE_EXT, RESOURCE, STR

_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


_INF = float("inf")


def _describe(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


class _Issues(list):
    """Issue list that also remembers whether the content needs ``_r4b_compat`` before the model step."""

    compat = False


def _err(issues: list[Issue], code: str, diagnostics: str, path: str) -> None:
    issues.append(Issue("error", code, diagnostics, [path]))


# --------------------------------------------------------------------------- strict walk


def _check_primitive(value: Any, info: defs.ElementInfo, path: str, issues: list[Issue]) -> None:
    kind = info.json_kind
    t = type(value)
    if kind is STR:
        if t is str:
            if not value:
                _err(issues, "value", f"Empty string is not allowed for '{info.name}' ({info.type})", path)
            elif info.type in PATTERNS:
                problem = format_error(info.type, value)
                if problem:
                    _err(issues, "value", f"Invalid {info.type} '{value}' for '{info.name}': {problem}", path)
            return
    elif kind is BOOL:
        if t is bool:
            return
    elif kind is INT:
        if t is int:
            lo, hi = INT_RANGES[info.type]
            if not lo <= value <= hi:
                _err(issues, "value", f"Value {value} is out of range for {info.type} ({lo}..{hi})", path)
            return
    elif kind is DEC:
        if t is float or t is int or t.__name__ == "Fragment":
            if t is float and (value != value or value in (_INF, -_INF)):
                _err(issues, "value", f"Decimal '{info.name}' must be a finite number", path)
            return
    if value is None:
        _err(issues, "structure", f"null is not allowed for '{info.name}'", path)
    elif t is dict or t is list:
        _err(issues, "structure", f"'{info.name}' must be a JSON {kind} ({info.type}), not {_describe(value)}", path)
    else:
        shown = value if t is not str else f"'{value}'"
        if t is bool:
            shown = "true" if value else "false"
        _err(issues, "value", f"Invalid {info.type} value {shown} for '{info.name}': "
                              f"expected a JSON {kind}, got {_describe(value)}", path)


def _walk(obj: dict, struct: defs.Struct, path: str, issues: list[Issue], is_resource: bool) -> None:
    """Validate one JSON object against a compiled structure."""
    if not obj:
        _err(issues, "structure", "Empty objects are not allowed", path)
        return
    elements = struct.elements
    choices: dict[str, str] | None = {} if struct.has_choice else None
    for key, value in obj.items():
        info = elements.get(key)
        if info is None:
            if is_resource and key == "resourceType":
                continue
            _err(issues, "structure", f"Unknown element '{key}'", f"{path}.{key}")
            continue
        if choices is not None and info.choice is not None:
            base = key.lstrip("_")
            if info.type == "Meta":
                issues.compat = True  # R4B dropped Meta from the open choice types
            seen = choices.setdefault(info.choice, base)
            if seen != base:
                _err(issues, "invalid", f"Only one of the choice elements '{info.choice}' may be present "
                                        f"(found '{seen}' and '{base}')", f"{path}.{base}")
        epath = f"{path}.{info.name}"
        kind = info.kind
        if info.array:
            if type(value) is not list:
                _err(issues, "structure", f"'{info.name}' repeats and must be a JSON array, not {_describe(value)}",
                     epath)
                continue
            if not value:
                _err(issues, "structure", f"Empty arrays are not allowed ('{info.name}')", epath)
                continue
            if kind == PRIMITIVE or kind == PRIMITIVE_EXT:
                _walk_primitive_array(obj, key, value, info, epath, issues)
                continue
            for i, item in enumerate(value):
                _item(item, info, f"{epath}[{i}]", issues)
        else:
            if type(value) is list:
                _err(issues, "structure", f"'{info.name}' does not repeat and must not be a JSON array", epath)
                continue
            if kind == PRIMITIVE:
                _check_primitive(value, info, epath, issues)
                if info.binding is not None:
                    check_code(value, info.binding, info.type, epath, issues)
            else:
                _item(value, info, epath, issues)
    for name, keys in struct.required:
        for k in keys:
            if k in obj:
                break
        else:
            _err(issues, "required", f"Missing required element '{name}'", f"{path}.{name}")
    check = _INVARIANTS.get(struct.name)
    if check is not None:
        check(obj, path, issues)


def _ext_1(obj: dict, path: str, issues: list[Issue]) -> None:
    """ext-1: an extension has either nested extensions or a value, not both (the R4B model does not check)."""
    if "extension" in obj and any(k.startswith("value") for k in obj):
        _err(issues, "invalid", "ext-1: an extension must have either extensions or value[x], not both", path)


def _txt_div(obj: dict, path: str, issues: list[Issue]) -> None:
    """Narrative.div must be an XHTML <div> element."""
    div = obj.get("div")
    if type(div) is str and div and not div.lstrip().startswith("<div"):
        _err(issues, "value", "Narrative 'div' must be an XHTML <div> element", f"{path}.div")


_INVARIANTS = {"Extension": _ext_1, "Narrative": _txt_div}


def _walk_primitive_array(obj: dict, key: str, value: list, info: defs.ElementInfo, path: str,
                          issues: list[Issue]) -> None:
    """Primitive arrays and their ``_x`` siblings may hold nulls, but only aligned with a value opposite."""
    ext = key[0] == "_"
    other = obj.get(key[1:] if ext else "_" + key)
    if type(other) is not list:
        other = None
    elif len(other) != len(value) and not ext:
        _err(issues, "structure", f"'{key}' and '_{key}' must have the same number of items", path)
    for i, item in enumerate(value):
        ipath = f"{path}[{i}]"
        if item is None:
            if other is None or i >= len(other) or other[i] is None:
                _err(issues, "structure", f"null is only allowed in '{key}' where the matching "
                                          f"{'value' if ext else 'extension'} item is present", ipath)
        elif ext:
            _item(item, info, ipath, issues)
        else:
            _check_primitive(item, info, ipath, issues)
            if info.binding is not None:
                check_code(item, info.binding, info.type, ipath, issues)


def _item(value: Any, info: defs.ElementInfo, path: str, issues: list[Issue]) -> None:
    kind = info.kind
    if kind == PRIMITIVE:
        _check_primitive(value, info, path, issues)
    elif type(value) is not dict:
        _err(issues, "structure", f"'{info.name}' must be a JSON object ({info.type}), not {_describe(value)}",
             path)
    elif kind == RESOURCE:
        if info.name == "contained" and "contained" in value:
            _err(issues, "invalid", "dom-2: a contained resource must not itself contain resources",
                 f"{path}.contained")
        _walk_resource(value, path, issues)
    else:  # COMPLEX or PRIMITIVE_EXT (an Element: id + extension)
        _walk(value, info.struct, path, issues, False)
        if info.binding is not None and kind != PRIMITIVE_EXT:
            check_complex(value, info.binding, info.type, path, issues)


def _walk_resource(value: dict, path: str, issues: list[Issue]) -> None:
    """A resource nested in contained / Bundle.entry.resource / Parameters.parameter.resource."""
    rt = value.get("resourceType")
    if rt is None:
        _err(issues, "invalid", "Nested resource has no 'resourceType'", f"{path}.resourceType")
    elif type(rt) is not str or rt not in defs.resource_types():
        _err(issues, "not-supported", f"Resource type '{rt}' is not supported", f"{path}.resourceType")
    else:
        if rt in R4B_INCOMPATIBLE_TYPES:
            issues.compat = True
        _walk(value, defs.struct_for(rt), path, issues, True)


def walk(data: dict, resource_type: str) -> list[Issue]:
    """Strict structural pass only (exposed for timing and for callers that skip the model)."""
    issues = _Issues()
    _walk(data, defs.struct_for(resource_type), resource_type, issues, True)
    rid = data.get("id")
    if type(rid) is str and rid and format_error("id", rid):
        _err(issues, "value", f"Invalid id '{rid}': {format_error('id', rid)}", f"{resource_type}.id")
    return issues


# --------------------------------------------------------------------------- model step

_FIELD = re.compile(r"^_?[A-Za-z][A-Za-z0-9]*$")


def _loc_to_path(root: str, loc: tuple) -> str:
    """('identifier', 0, 'system') -> 'Patient.identifier[0].system'; drops pydantic's internal loc parts."""
    out = root
    for part in loc:
        if type(part) is int:
            out += f"[{part}]"
        elif isinstance(part, str) and _FIELD.match(part) and part != "resourceType":
            out += "." + part.lstrip("_")
    return out


def _covered(path: str, reported: set[str]) -> bool:
    """True if the walk already reported this path or one of its ancestors."""
    if path in reported:
        return True
    for p in reported:
        if path.startswith(p) and path[len(p)] in ".[":
            return True
    return False


def _clean_msg(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg.rstrip(".")


# Model errors the strict walk always reports itself (choice-group cardinality).
_WALK_COVERS = ("but got multiple", "Expect any of field value from this list")
_REGEX_MSG = re.compile(r"^(\w+) value string does not match spec regex")


def _translate(err: dict, root: str) -> Issue | None:
    loc = err.get("loc", ())
    path = _loc_to_path(root, loc)
    etype = err.get("type", "")
    value = err.get("input")
    fields = [p for p in loc if isinstance(p, str) and _FIELD.match(p)]
    name = fields[-1].lstrip("_") if fields else root
    msg = _clean_msg(err.get("msg", ""))
    if any(m in msg for m in _WALK_COVERS):
        return None
    m = _REGEX_MSG.match(msg)
    if m:
        msg = f"not a valid {m.group(1)[0].lower() + m.group(1)[1:]}"
    msg = msg.replace("Input should be a valid date or datetime, ", "not a valid date: ")
    if etype in ("missing", "model_field_validation.missing"):
        return Issue("error", "required", f"Missing required element '{name}'", [path])
    if etype == "extra_forbidden":
        if fields and fields[-1].startswith("_"):
            # a primitive-extension sibling the walk has checked (and would have reported if unknown);
            # the R4B model lacks some, e.g. Extension's `_valueString`
            return None
        return Issue("error", "structure", f"Unknown element '{name}'", [path])
    if isinstance(value, dict) or not loc:
        # model-level validators: invariants, choice groups, primitive-extension rules
        return Issue("error", "invalid", msg, [path])
    if isinstance(value, str):
        shown = f"'{value}'"
    elif isinstance(value, (int, float, bool)) or value is None:
        shown = repr(value)
    else:
        shown = _describe(value)
    if etype == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        return Issue("error", "value", f"Invalid value {shown} for '{name}': does not match {pattern}", [path])
    return Issue("error", "value", f"Invalid value {shown} for '{name}': {msg}", [path])


def model_issues(data: dict, resource_type: str, reported: set[str] | None = None,
                 compat: bool = True) -> list[Issue]:
    """Run the fhir.resources R4B model; translate its errors into issues not already reported.

    ``compat`` says the content holds R4 constructs the R4B model lacks (the walk
    detects this); it is adapted on a copy first.
    """
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if resource_type in R4B_INCOMPATIBLE_TYPES:
        return []
    reported = reported or set()
    payload = _r4b_compat(data) if compat else data
    try:
        get_fhir_model_class(resource_type).model_validate(payload)
    except ValidationError as exc:
        out: list[Issue] = []
        seen: set[tuple[str, str]] = set()
        for err in exc.errors(include_url=False):
            issue = _translate(err, resource_type)
            if issue is None:
                continue
            key = (issue.expression[0], issue.diagnostics)
            if key in seen or _covered(issue.expression[0], reported):
                continue
            if issue.code == "invalid" and any(r.startswith(key[0] + ".") for r in reported):
                continue  # e.g. "One of field value is required" on a `_x` whose content the walk rejected
            seen.add(key)
            out.append(issue)
        return out
    except Exception as exc:  # the model library can raise raw errors on malformed nesting
        if reported:
            return []
        return [Issue("error", "invalid", f"Resource could not be parsed: {exc}", [resource_type])]
    return []


# R4 resources whose R4B shape is different altogether: the model step cannot judge them.
R4B_INCOMPATIBLE_TYPES = frozenset({"Evidence", "EvidenceVariable"})
# R4 open-type choice elements of type Meta, absent from R4B.
_META_CHOICES = {"valueMeta": "valueString", "defaultValueMeta": "defaultValueString",
                 "fixedMeta": "fixedString", "patternMeta": "patternString"}


def _r4b_compat(value: Any) -> Any:
    """Copy of R4 content that the R4B model accepts; the walk has already validated what is replaced.

    * ``valueMeta`` & co. (Extension / ElementDefinition choice types) become a
      placeholder string, so R4B's one-of-many rules still see a value.
    * nested Evidence / EvidenceVariable resources become a minimal Basic with the same id.
    """
    if type(value) is dict:
        rt = value.get("resourceType")
        if rt in R4B_INCOMPATIBLE_TYPES:
            stub = {"resourceType": "Basic", "code": {"text": f"R4 {rt}"}}
            if "id" in value:
                stub["id"] = value["id"]
            return stub
        out = {}
        for k, v in value.items():
            if k in _META_CHOICES:
                out[_META_CHOICES[k]] = "Meta"
            else:
                out[k] = _r4b_compat(v)
        return out
    if type(value) is list:
        return [_r4b_compat(v) for v in value]
    return value


# --------------------------------------------------------------------------- entry point

# The R4B model step, after the walk. Switchable only to measure what it adds.
MODEL_STEP = True


def validate_resource(data: Any, expected_type: str | None = None, warnings: list[Issue] | None = None) -> list[Issue]:
    """Validate a parsed JSON resource; returns error issues (empty list means valid).

    Warnings (codes outside an extensible or preferred binding) are appended
    to ``warnings`` when a list is given, else dropped.
    """
    if type(data) is not dict:
        return [Issue("error", "structure", f"A resource must be a JSON object, not {_describe(data)}")]
    rt = data.get("resourceType")
    if rt is None:
        return [Issue("error", "invalid", "Missing 'resourceType'", ["resourceType"])]
    if type(rt) is not str or rt not in defs.resource_types():
        return [Issue("error", "not-supported", f"Resource type '{rt}' is not supported", ["resourceType"])]
    if expected_type is not None and rt != expected_type:
        return [Issue("error", "invalid",
                      f"Resource type '{rt}' does not match the expected type '{expected_type}'", ["resourceType"])]
    issues = walk(data, rt)
    if any(i.severity == "warning" for i in issues):
        soft = [i for i in issues if i.severity == "warning"]
        if warnings is not None:
            warnings.extend(soft)
        compat = issues.compat
        issues = _Issues(i for i in issues if i.severity != "warning")
        issues.compat = compat
    reported = {i.expression[0] for i in issues if i.expression}
    reported |= {p.replace("._", ".") for p in reported if "._" in p}  # model paths drop the "_" of `_x`
    model = model_issues(data, rt, reported, compat=issues.compat) if MODEL_STEP else []
    issues = list(issues)
    issues.extend(model)
    return issues
