"""Limits on parsed JSON that FHIR, the storage and the serialiser can hold.

JSON allows more than FHIR (R4 §2.6.2 "JSON representation", §2.24.0.1 data
types) can represent, and more than the rest of the server should have to
expect. Every request body is checked here, once, right after parsing:

- nesting: at most `MAX_DEPTH` levels of objects/arrays (FHIR resources,
  even Questionnaires with nested items, stay far below it);
- strings (property names and values): no lone UTF-16 surrogates (they are
  not Unicode scalar values, so not valid UTF-8), and no control characters
  other than tab, CR and LF (R4 `string`: "Strings SHOULD not contain Unicode
  character points below 32, except for u0009, u000D and u000A"; we refuse
  them, so that the SQLite and PostgreSQL answers are the same: PostgreSQL
  text cannot hold U+0000 at all);
- names: each property at most once per object (a parser would keep only the last
  value of a repeated name and silently drop the others);
- numbers: integers within the 64-bit range (the `integer` types are 32-bit
  and checked by the validator per element; a `decimal` may be written as a
  large integer literal), decimals finite and within the range of an IEEE
  double (XML Schema decimal limits; `1e999` is not a number anyone can store).

A failure is a `FhirError` 400 (`structure` for nesting, `value` for the rest)
whose `expression` names the element, e.g. `Patient.name[0].family`.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

import orjson

from ..errors import FhirError

MAX_DEPTH = 100
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
# In JSON text, the characters above can only arrive as escapes (\u0000..., \b, \f,
# \ud800...); raw control bytes are malformed JSON and raw surrogates are not UTF-8.
_ESCAPE_MARKERS = (b"\\u", b"\\b", b"\\f")
_FLOAT_MAX = Decimal("1.7976931348623157e308")
_FLOAT_MIN = Decimal("2.2250738585072014e-308")


def bad_char_message(text: str) -> str | None:
    """Why `text` cannot be a FHIR string, or None when it can."""
    m = _BAD_CHARS.search(text)
    if m is None:
        return None
    ch = m.group()
    if "\ud800" <= ch <= "\udfff":
        return f"holds a lone UTF-16 surrogate (U+{ord(ch):04X}), which is not a Unicode character"
    return f"holds the control character U+{ord(ch):04X}; FHIR strings may hold no control characters other than tab, CR and LF"


def scrub(value: Any) -> Any:
    """`value` (a JSON-ready structure) with every character a FHIR string may not hold
    replaced by U+FFFD: for records the server writes about refused input (the access log),
    which must store what was asked without storing what cannot be stored."""
    if isinstance(value, str):
        return _BAD_CHARS.sub("\ufffd", value) if _BAD_CHARS.search(value) else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # a tuple (an event's (type, id) pairs) is written as a list anyway
        return [scrub(v) for v in value]
    return value


def check_text(text: str, what: str, expression: str | None = None) -> None:
    """400 when `text` (a search value, an id, a header...) holds what a FHIR string may not."""
    why = bad_char_message(text)
    if why is not None:
        raise FhirError.of(400, "value", f"{what} {why}", expression)


def check_document(doc: Any, raw: bytes | str | None = None) -> None:
    """Check a parsed JSON document against the limits above (400 naming the element).

    `raw`, the text it was parsed from, lets the common case skip the walk:
    control characters and surrogates can only arrive as escapes, numbers out
    of range need 19+ digits or an exponent, and the nesting depth is counted
    on the text with its strings removed."""
    if raw is not None:
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        outside_strings = _outside_strings(data)
        if outside_strings.count(b":") != _pairs_in(doc):
            _refuse_duplicate_names(data)
        if not any(m in data for m in _ESCAPE_MARKERS):
            if not _numbers_suspect(outside_strings) and not _too_deep_shape(outside_strings):
                return
    _walk(doc)


def _pairs_in(doc: Any) -> int:
    """How many name/value pairs the parsed document's objects hold (serialised again
    at C speed: each pair leaves one ':' outside the strings)."""
    try:
        return _outside_strings(orjson.dumps(doc, default=str)).count(b":")
    except (TypeError, orjson.JSONEncodeError):  # an integer beyond 64 bits (refused later, naming it): count by walking
        count, stack = 0, [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                count += len(node)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return count


def _refuse_duplicate_names(data: bytes) -> None:
    """400 naming the property that occurs twice in one object. The text has more
    name/value pairs than the parsed objects kept: a parser keeps only the last of
    repeated names, so the body would silently lose data (RFC 8259 section 4: names
    within an object SHOULD be unique, else the meaning is unpredictable)."""

    def pairs(items: list) -> dict:
        seen: set = set()
        for name, _ in items:
            if name in seen:
                raise FhirError.of(400, "structure", f"Property '{name}' occurs twice in one JSON object: "
                                   "each property may appear once (repeating elements are arrays)")
            seen.add(name)
        return dict(items)

    try:
        json.loads(data, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # text the fast parser took but this one does not: name no property
        raise FhirError.of(400, "structure", "A property occurs twice in one JSON object: each property may appear once") from None


_NOT_NUMBER_CHARS = bytes(b for b in range(256) if b not in b"0123456789.")
_NUMBER_TOKENS = bytes.maketrans(_NOT_NUMBER_CHARS, b" " * len(_NOT_NUMBER_CHARS))


def _numbers_suspect(outside_strings: bytes) -> bool:
    """Whether a number literal may be out of range: one with an exponent, or
    an integer literal of 19 digits or more (all C-speed scans)."""
    words = outside_strings.replace(b"true", b"").replace(b"false", b"")
    if b"e" in words or b"E" in words:
        return True
    return any(len(tok) >= 19 and b"." not in tok for tok in outside_strings.translate(_NUMBER_TOKENS).split())
_BRACKETS = bytes.maketrans(b"{[}]", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"{[}]")


def too_deep(data: bytes) -> bool:
    """Whether the JSON text nests deeper than MAX_DEPTH."""
    return _too_deep_shape(_outside_strings(data))


def _outside_strings(data: bytes) -> bytes:
    """The JSON text without its string literals (at C speed: escaped backslashes
    and quotes are dropped first, then every other quote-delimited piece)."""
    return b"".join(data.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[0::2])


def _too_deep_shape(outside_strings: bytes) -> bool:
    # keep only the brackets; each round removes the innermost level
    shape = outside_strings.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        if not shape:
            return False
        shape = shape.replace(b"()", b"")
    return bool(shape)


def _walk(doc: Any) -> None:
    root = doc.get("resourceType") if isinstance(doc, dict) and isinstance(doc.get("resourceType"), str) else None
    check_strings = True
    # iterative walk: (value, depth, path parts); the path is only rendered on failure
    stack: list[tuple[Any, int, tuple]] = [(doc, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                _fail(400, "structure", f"JSON nested deeper than {MAX_DEPTH} levels", root, path[:5] + ("...",))
            for key, item in value.items():
                if check_strings and _BAD_CHARS.search(key):
                    _fail(400, "structure", f"Property name {bad_char_message(key)}", root, path)
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, (*path, key)))
                elif item.__class__ is not bool and item is not None:
                    _scalar(item, check_strings, root, path, key)
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                _fail(400, "structure", f"JSON nested deeper than {MAX_DEPTH} levels", root, path[:5] + ("...",))
            for i, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, (*path, i)))
                elif item.__class__ is not bool and item is not None:
                    _scalar(item, check_strings, root, path, i)
        elif value.__class__ is not bool and value is not None:
            _scalar(value, check_strings, root, path[:-1], path[-1] if path else None)


def _scalar(value: Any, check_strings: bool, root: str | None, path: tuple, key: Any) -> None:
    cls = value.__class__
    if cls is str:
        if check_strings and _BAD_CHARS.search(value):
            _fail(400, "value", f"The value {bad_char_message(value)}", root, (*path, key))
    elif cls is int:
        if not INT64_MIN <= value <= INT64_MAX:
            _fail(400, "value", "The number is out of range: FHIR integers are 32-bit and no number may exceed 64 bits", root, (*path, key))
    elif cls is float:
        if not math.isfinite(value):
            _fail(400, "value", "The number is out of range: a FHIR decimal must be a finite number", root, (*path, key))
    elif isinstance(value, Decimal):
        if not value.is_finite() or (value != 0 and not _FLOAT_MIN <= abs(value) <= _FLOAT_MAX):
            _fail(400, "value", "The number is out of range: a FHIR decimal must lie within about 1e-308 to 1e308", root, (*path, key))


def render_path(root: str | None, path: tuple) -> str:
    """FHIRPath-like location: `Patient.name[0].family` (`$` for a non-resource document)."""
    out = root or "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _fail(status: int, code: str, message: str, root: str | None, path: tuple) -> None:
    where = render_path(root, tuple(p for p in path if p is not None))
    raise FhirError.of(status, code, f"{message} (at {where})", where)
