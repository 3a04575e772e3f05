"""FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html) applied to resource dicts.

fhirpathpy evaluates expressions to *values*, but a patch has to know *where*
a value lives to change it, so this module carries its own small resolver for
the subset of FHIRPath that patches use in practice: ``Type.a.b``, ``[n]``,
``where(...)``, ``first()``, ``last()``, ``extension('url')``, ``ofType(T)``
and choice elements (``Observation.value`` finding ``valueQuantity``).

Cardinality (does ``identifier`` repeat?) is not visible in JSON when the
element is absent, so it is read from the fhir.resources (R4B) model classes
when they are importable; without them the resolver falls back to what the
data itself shows.
"""

from __future__ import annotations

import copy
import re
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir_server.errors import FhirError

__all__ = ["apply_fhirpath_patch"]

# --------------------------------------------------------------------------- schema

# Data type names that can follow a choice element's stem (valueQuantity, ...);
# used only when no model class is available to say what is a choice.
_CHOICE_SUFFIXES = frozenset(
    """Base64Binary Boolean Canonical Code Date DateTime Decimal Id Instant Integer Integer64
    Markdown Oid PositiveInt String Time UnsignedInt Uri Url Uuid Address Age Annotation
    Attachment CodeableConcept CodeableReference Coding ContactPoint Count Distance Duration
    HumanName Identifier Money Period Quantity Range Ratio RatioRange Reference SampledData
    Signature Timing ContactDetail Contributor DataRequirement Expression ParameterDefinition
    RelatedArtifact TriggerDefinition UsageContext Dosage Meta""".split()
)


@dataclass(frozen=True)
class _Field:
    is_list: bool
    type_name: str | None  # model class name for complex types, None for primitives
    choice: str | None  # choice stem ("value") when this is one variant of value[x]


def _model_class(type_name: str | None):
    if not type_name:
        return None
    return _model_class_cached(type_name)


@lru_cache(maxsize=None)
def _model_class_cached(type_name: str):
    try:
        from fhir.resources.R4B import get_fhir_model_class
    except Exception:  # pragma: no cover - fhir.resources is a dependency
        return None
    try:
        return get_fhir_model_class(type_name)
    except Exception:
        return None


def _complex_type_name(annotation: Any) -> str | None:
    """Find the 'XxxType' marker class fhir.resources puts in annotations."""
    if isinstance(annotation, type):
        name = annotation.__name__
        if name.endswith("Type") and type(annotation).__name__ == "ABCMeta":
            return name[: -len("Type")]
        return None
    for arg in typing.get_args(annotation):
        found = _complex_type_name(arg)
        if found:
            return found
    return None


@lru_cache(maxsize=None)
def _fields(type_name: str) -> dict[str, _Field] | None:
    """Element name -> field info for a FHIR type, or None if the type is unknown."""
    cls = _model_class(type_name)
    if cls is None or not hasattr(cls, "model_fields"):
        return None
    out: dict[str, _Field] = {}
    for pyname, f in cls.model_fields.items():
        name = f.alias or pyname
        if name.startswith("_") or pyname == "fhir_comments" or pyname.endswith("__ext"):
            continue
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        out[name] = _Field(
            is_list="List[" in str(f.annotation) or "list[" in str(f.annotation),
            type_name=_complex_type_name(f.annotation),
            choice=extra.get("one_of_many"),
        )
    return out


def _choice_stems(type_name: str | None) -> set[str]:
    fields = _fields(type_name) if type_name else None
    return {f.choice for f in fields.values() if f.choice} if fields else set()


# --------------------------------------------------------------------------- nodes


@dataclass
class _Node:
    """A value in the resource together with where it is stored."""

    value: Any
    parent: dict | None = None  # dict holding the element (None for the root)
    key: str | None = None  # JSON property name in parent
    index: int | None = None  # position when parent[key] is a list
    type_name: str | None = None
    choice: str | None = None  # stem if key is a choice variant


def _bad(msg: str, expr: str | None = None) -> FhirError:
    return FhirError.of(400, "invalid", msg, expr)


def _unprocessable(msg: str, expr: str | None = None) -> FhirError:
    return FhirError.of(422, "processing", msg, expr)


def _children(node: _Node, name: str) -> list[_Node]:
    """Navigate to child `name`, flattening lists and resolving choice types."""
    obj = node.value
    if not isinstance(obj, dict):
        return []
    fields = _fields(node.type_name) if node.type_name else None
    keys: list[tuple[str, str | None, str | None]] = []  # (key, type_name, choice stem)
    info = fields.get(name) if fields else None
    if name in obj:
        keys.append((name, info.type_name if info else None, None))
    elif fields is not None and name in _choice_stems(node.type_name):
        for key in obj:
            f = fields.get(key)
            if f and f.choice == name:
                keys.append((key, f.type_name, name))
    elif fields is None:
        for key in obj:
            suffix = key[len(name):]
            if key.startswith(name) and suffix in _CHOICE_SUFFIXES:
                keys.append((key, suffix if _model_class(suffix) else None, name))
    out: list[_Node] = []
    for key, tname, stem in keys:
        val = obj[key]
        items = list(enumerate(val)) if isinstance(val, list) else [(None, val)]
        for idx, item in items:
            t = tname
            if t in ("Resource", "DomainResource") and isinstance(item, dict):
                t = item.get("resourceType")
            out.append(_Node(item, obj, key, idx, t, stem))
    return out


# --------------------------------------------------------------------------- path parsing


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quotes, brackets and parentheses."""
    parts, depth, quote, buf, i = [], 0, None, [], 0
    while i < len(text):
        ch = text[i]
        if quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'`\"":
            quote = ch
            buf.append(ch)
        elif ch in "([":
            depth += 1
            buf.append(ch)
        elif ch in ")]":
            depth -= 1
            buf.append(ch)
        elif depth == 0 and text.startswith(sep, i):
            parts.append("".join(buf))
            buf = []
            i += len(sep)
            continue
        else:
            buf.append(ch)
        i += 1
    if quote or depth:
        raise ValueError("unbalanced quotes or brackets")
    parts.append("".join(buf))
    return parts


_SEGMENT = re.compile(
    r"^\s*(?:`(?P<q>[^`]+)`|(?P<name>[A-Za-z_][A-Za-z0-9_]*))\s*"
    r"(?:\((?P<args>.*)\))?\s*(?P<idx>(?:\[\s*[0-9]{1,9}\s*\]\s*)*)$",
    re.S,
)


@dataclass
class _Segment:
    name: str
    args: str | None  # None: a name step; otherwise a function call's argument text
    indexes: list[int]


def _parse_path(path: str) -> list[_Segment]:
    if not isinstance(path, str) or not path.strip():
        raise _bad("FHIRPath Patch path is empty")
    try:
        raw = _split_top(path.strip(), ".")
    except ValueError as exc:
        raise _bad(f"Cannot parse path '{path}': {exc}", path) from None
    segs = []
    for text in raw:
        m = _SEGMENT.match(text)
        if not m:
            raise _bad(f"Cannot parse path '{path}' at '{text.strip()}'", path)
        idx = [int(x) for x in re.findall(r"[0-9]+", m.group("idx") or "")]
        segs.append(_Segment(m.group("q") or m.group("name"), m.group("args"), idx))
    return segs


_LITERAL = r"'(?:[^'\\]|\\.)*'|-?[0-9]+(?:\.[0-9]+)?|true|false|@[0-9T:.+\-Z]+"
_EQUALITY = re.compile(
    rf"^\s*(?P<lhs>[A-Za-z_$][A-Za-z0-9_.$]*)\s*(?P<op>!=|=)\s*(?P<lit>{_LITERAL})\s*$", re.S
)


def _literal(text: str) -> Any:
    if text.startswith("'"):
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), text[1:-1])
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("@"):
        return text[1:]
    return float(text) if "." in text else int(text)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _matches(node: _Node, criteria: str, path: str) -> bool:
    """Evaluate a where() criterion on one element.

    Conjunctions of `child.path = literal` are evaluated here so that choice
    types resolve; anything richer goes to fhirpathpy on the element's value.
    """
    try:
        terms = _split_top(criteria, " and ")
    except ValueError:
        raise _bad(f"Cannot parse where() criteria in '{path}'", path) from None
    parsed = [_EQUALITY.match(t) for t in terms]
    if all(parsed):
        for m in parsed:
            current = [node]
            for name in m.group("lhs").split("."):
                if name == "$this":
                    continue
                current = [c for n in current for c in _children(n, name)]
            want = _literal(m.group("lit"))
            hit = any(_same(c.value, want) for c in current)
            if hit == (m.group("op") == "!="):
                return False
        return True
    try:
        import fhirpathpy

        return fhirpathpy.evaluate(node.value, criteria) == [True]
    except Exception as exc:
        raise _bad(f"Cannot evaluate where() criteria '{criteria}': {exc}", path) from None


def _apply_function(nodes: list[_Node], seg: _Segment, path: str) -> list[_Node]:
    name, args = seg.name, (seg.args or "").strip()
    if name == "where":
        if not args:
            raise _bad("where() needs a criterion", path)
        return [n for n in nodes if _matches(n, args, path)]
    if name == "first":
        return nodes[:1]
    if name == "last":
        return nodes[-1:]
    if name == "extension":
        url = _literal(args) if re.fullmatch(_LITERAL, args) else None
        if not isinstance(url, str):
            raise _bad("extension() needs a url string", path)
        return [c for n in nodes for c in _children(n, "extension") if isinstance(c.value, dict) and c.value.get("url") == url]
    if name == "ofType":
        t = args.split(".")[-1].strip("`")
        return [n for n in nodes if (n.type_name or "").lower() == t.lower() or (n.choice and n.key.lower().endswith(t.lower()))]
    raise FhirError.of(400, "not-supported", f"FHIRPath function {name}() is not supported in patch paths", path)


def _resolve(resource: dict, segs: list[_Segment], path: str) -> list[_Node]:
    root = _Node(resource, type_name=resource.get("resourceType"))
    first = segs[0]
    if first.args is None and first.name[:1].isupper():
        nodes = [root] if first.name in (resource.get("resourceType"), "Resource", "DomainResource") else []
        nodes = _index(nodes, first.indexes)
        rest = segs[1:]
    else:
        nodes, rest = [root], segs
    for seg in rest:
        if seg.args is None:
            nodes = [c for n in nodes for c in _children(n, seg.name)]
        else:
            nodes = _apply_function(nodes, seg, path)
        nodes = _index(nodes, seg.indexes)
    return nodes


def _index(nodes: list[_Node], indexes: list[int]) -> list[_Node]:
    for i in indexes:
        nodes = nodes[i : i + 1]
    return nodes


# --------------------------------------------------------------------------- parameters


def _value_of(part: dict) -> tuple[str | None, Any] | None:
    """The value[x] of a Parameters part as (type suffix, value), or None."""
    for key, val in part.items():
        if key.startswith("value") and len(key) > 5 and key[5].isupper():
            return key[5:], val
    if "resource" in part:
        res = part["resource"]
        return (res.get("resourceType") if isinstance(res, dict) else None), res
    return None


def _build_value(part: dict, type_name: str | None, path: str) -> tuple[str | None, Any]:
    """Turn an operation's `value` part into JSON: value[x], or an object from nested parts."""
    simple = _value_of(part)
    if simple is not None:
        return copy.deepcopy(simple[0]), copy.deepcopy(simple[1])
    subparts = part.get("part")
    if not isinstance(subparts, list) or not subparts:
        raise _bad("An operation value must be a value[x] or nested parts", path)
    fields = _fields(type_name) if type_name else None
    out: dict = {}
    for sub in subparts:
        if not isinstance(sub, dict) or not isinstance(sub.get("name"), str):
            raise _bad("Every nested value part needs a name", path)
        name = sub["name"]
        info = fields.get(name) if fields else None
        suffix, val = _build_value(sub, info.type_name if info else None, path)
        key = name
        if info is None and name in _choice_stems(type_name):
            if not suffix:
                raise _bad(f"Choice element '{name}' needs a typed value", path)
            key = name + suffix
            info = fields.get(key)
        if info is not None and info.is_list:
            out.setdefault(key, []).append(val)
        elif key in out:  # unknown schema: repetition means a list
            out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [val]
        else:
            out[key] = val
    return None, out


def _operation(param: Any) -> dict[str, Any]:
    if not isinstance(param, dict) or param.get("name") != "operation":
        raise _bad("FHIRPath Patch parameters must all be named 'operation'")
    parts = param.get("part")
    if not isinstance(parts, list):
        raise _bad("An 'operation' parameter needs parts")
    op: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise _bad("Every operation part needs a name")
        name = part["name"]
        if name in op:
            raise _bad(f"Operation part '{name}' is repeated")
        if name == "value":
            op[name] = part
        else:
            v = _value_of(part)
            if v is None:
                raise _bad(f"Operation part '{name}' has no value")
            op[name] = v[1]
    return op


def _int_part(op: dict, name: str) -> int:
    v = op.get(name)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(f"Operation '{op.get('type')}' needs an integer '{name}'", op.get("path"))
    return v


# --------------------------------------------------------------------------- operations


def _single(nodes: list[_Node], op: str, path: str) -> _Node:
    if not nodes:
        raise _unprocessable(f"No content found at {path} for {op}", path)
    if len(nodes) > 1:
        raise _unprocessable(f"Path {path} matches {len(nodes)} elements; {op} needs exactly one", path)
    return nodes[0]


def _container(resource: dict, path: str, op: str) -> tuple[_Node, str]:
    """For insert/move: the object holding the list, and the list's property name."""
    segs = _parse_path(path)
    last = segs[-1]
    if len(segs) < 2 or last.args is not None or last.indexes:
        raise _bad(f"{op} needs a path that ends in a list element name, got '{path}'", path)
    node = _single(_resolve(resource, segs[:-1], path), op, path)
    if not isinstance(node.value, dict):
        raise _unprocessable(f"{path} does not name a list inside an object", path)
    return node, last.name


def _as_list(holder: dict, key: str) -> list:
    cur = holder.get(key)
    if cur is None:
        cur = []
    elif not isinstance(cur, list):
        cur = [cur]
    holder[key] = cur
    return cur


def _op_add(resource: dict, op: dict) -> None:
    path, name = op["path"], op.get("name")
    if not isinstance(name, str) or not name:
        raise _bad("add needs a 'name'", path)
    if "value" not in op:
        raise _bad("add needs a 'value'", path)
    node = _single(_resolve(resource, _parse_path(path), path), "add", path)
    if not isinstance(node.value, dict):
        raise _unprocessable(f"Cannot add '{name}' to the primitive at {path}", path)
    fields = _fields(node.type_name) if node.type_name else None
    stem = name[:-3] if name.endswith("[x]") else name
    info = fields.get(stem) if fields else None
    key = stem
    if info is None and (name.endswith("[x]") or stem in _choice_stems(node.type_name)):
        typed = _value_of(op["value"])
        suffix = typed[0] if typed else None
        if not suffix:
            raise _bad(f"Choice element '{stem}' needs a typed value[x]", path)
        key = stem + suffix[0].upper() + suffix[1:]
        info = fields.get(key) if fields else None
        if fields and any(k != key and k in fields and fields[k].choice == stem for k in node.value):
            raise _unprocessable(f"{path} already has a value for {stem}[x]; use replace", path)
    _, value = _build_value(op["value"], info.type_name if info else None, path)
    target = node.value
    repeats = info.is_list if info is not None else isinstance(target.get(key), list)
    if repeats:
        _as_list(target, key).append(value)
        _shift_primitive_ext(target, key, lambda ext: ext.append(None))
    elif target.get(key) not in (None, [], {}):
        raise _unprocessable(f"{path}.{key} already has a value; use replace", path)
    else:
        target[key] = value


def _op_insert(resource: dict, op: dict) -> None:
    path = op["path"]
    if "value" not in op:
        raise _bad("insert needs a 'value'", path)
    index = _int_part(op, "index")
    node, key = _container(resource, path, "insert")
    fields = _fields(node.type_name) if node.type_name else None
    info = fields.get(key) if fields else None
    if info is not None and not info.is_list:
        raise _unprocessable(f"{path} is not a repeating element", path)
    items = _as_list(node.value, key)
    if not 0 <= index <= len(items):
        raise _unprocessable(f"insert index {index} is outside 0..{len(items)} at {path}", path)
    _, value = _build_value(op["value"], info.type_name if info else None, path)
    items.insert(index, value)
    _shift_primitive_ext(node.value, key, lambda ext: ext.insert(index, None))


def _op_move(resource: dict, op: dict) -> None:
    path = op["path"]
    src, dst = _int_part(op, "source"), _int_part(op, "destination")
    node, key = _container(resource, path, "move")
    items = node.value.get(key)
    if not isinstance(items, list):
        raise _unprocessable(f"No list found at {path} for move", path)
    for label, i in (("source", src), ("destination", dst)):
        if not 0 <= i < len(items):
            raise _unprocessable(f"move {label} {i} is outside 0..{len(items) - 1} at {path}", path)
    items.insert(dst, items.pop(src))
    _shift_primitive_ext(node.value, key, lambda ext: ext.insert(dst, ext.pop(src)))


def _op_replace(resource: dict, op: dict) -> None:
    path = op["path"]
    if "value" not in op:
        raise _bad("replace needs a 'value'", path)
    node = _single(_resolve(resource, _parse_path(path), path), "replace", path)
    if node.parent is None:
        raise _bad("replace cannot target the whole resource", path)
    suffix, value = _build_value(op["value"], node.type_name, path)
    if node.choice and suffix and node.key != node.choice + suffix:
        if node.index is not None:
            raise _unprocessable(f"Cannot change the type of a repeating choice element at {path}", path)
        node.parent.pop(node.key)
        node.parent.pop("_" + node.key, None)
        node.parent[node.choice + suffix] = value
    elif node.index is not None:
        node.parent[node.key][node.index] = value
    else:
        node.parent[node.key] = value


def _op_delete(resource: dict, op: dict) -> None:
    path = op["path"]
    nodes = _resolve(resource, _parse_path(path), path)
    if not nodes:
        return  # deleting nothing is not an error (spec)
    node = _single(nodes, "delete", path)
    if node.parent is None:
        raise _bad("delete cannot target the whole resource", path)
    if node.index is None:
        node.parent.pop(node.key, None)
        node.parent.pop("_" + node.key, None)
    else:
        node.parent[node.key].pop(node.index)
        _shift_primitive_ext(node.parent, node.key, lambda ext: ext.pop(node.index) if node.index < len(ext) else None)
    _prune(resource)


def _shift_primitive_ext(holder: dict, key: str, change) -> None:
    """Keep a primitive list's parallel `_key` extension array aligned with it."""
    ext = holder.get("_" + key)
    if isinstance(ext, list):
        change(ext)
        if all(e is None for e in ext):
            holder.pop("_" + key)


def _prune(value: Any) -> Any:
    """Drop objects and arrays a delete left empty: FHIR JSON forbids them."""
    if isinstance(value, dict):
        for k in list(value):
            _prune(value[k])
            if value[k] in ({}, []) or value[k] is None:
                del value[k]
    elif isinstance(value, list):
        for item in value:
            _prune(item)
    return value


_OPS = {"add": _op_add, "insert": _op_insert, "delete": _op_delete, "replace": _op_replace, "move": _op_move}


def apply_fhirpath_patch(resource: dict, parameters: dict) -> dict:
    """Apply a FHIRPath Patch Parameters resource to a deep copy of `resource`.

    Operations run in order; any failure rejects the whole patch, and the input
    is never modified.
    """
    if not isinstance(resource, dict):
        raise _bad("The resource to patch must be a JSON object")
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise _bad("A FHIRPath Patch body must be a Parameters resource")
    params = parameters.get("parameter", [])
    if not isinstance(params, list):
        raise _bad("Parameters.parameter must be an array")
    ops = [_operation(p) for p in params]  # validate everything before touching data
    for op in ops:
        kind = op.get("type")
        if kind not in _OPS:
            raise _bad(f"Unknown FHIRPath Patch operation type '{kind}'")
        if not isinstance(op.get("path"), str):
            raise _bad(f"Operation '{kind}' needs a string 'path'")
    result = copy.deepcopy(resource)
    for op in ops:
        _OPS[op["type"]](result, op)
    return result
