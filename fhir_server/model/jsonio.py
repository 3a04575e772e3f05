"""JSON parsing that keeps what FHIR says is significant.

Decimal precision is significant in FHIR (`72.50` is not `72.5`), so the text
we store and serve keeps each decimal literal as sent: the "preserving" parse
turns every JSON number with a fraction or exponent into a `Decimal`
(which keeps its digits and compares equal to the float), and `dumps` writes a
Decimal back verbatim. A separate plain parse (floats) feeds the
validator and the search indexer.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from ..errors import FhirError
from . import jsonguard


class JsonDecimal(Decimal):
    """A Decimal that remembers the literal it was parsed from (`1.0e3` stays so)."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> "JsonDecimal":
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def _malformed(exc: json.JSONDecodeError | None) -> FhirError:
    """400 in our own words (the parser's message says more about the parser than the body)."""
    where = f" (line {exc.lineno}, column {exc.colno})" if exc is not None and getattr(exc, "lineno", None) else ""
    return FhirError.of(400, "structure", f"The body is not valid JSON{where}")


def parse_plain(body: bytes | str) -> Any:
    """Fast parse for validation and indexing (decimals become floats); checked
    against `jsonguard` (depth, strings, numbers: 400 naming the element)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # the slower parser names the element (a lone surrogate, too deep) or the position
        parse_preserving(body)
        raise _malformed(exc) from None
    jsonguard.check_document(doc, body)
    return doc


def parse_preserving(body: bytes | str) -> Any:
    """Parse keeping decimal literals exactly as written (for storage)."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FhirError.of(400, "structure", f"The body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        doc = json.loads(body, parse_float=JsonDecimal)
    except json.JSONDecodeError as exc:
        raise _malformed(exc) from None
    except RecursionError:
        raise FhirError.of(400, "structure", f"JSON nested deeper than {jsonguard.MAX_DEPTH} levels") from None
    jsonguard.check_document(doc, body)
    return doc


def _default(obj: Any) -> Any:
    if isinstance(obj, JsonDecimal):
        return orjson.Fragment(obj.text)
    if isinstance(obj, Decimal):
        return orjson.Fragment(str(obj))
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, pretty: bool = False) -> bytes:
    return orjson.dumps(obj, default=_default, option=orjson.OPT_INDENT_2 if pretty else 0)


def to_plain(obj: Any) -> Any:
    """Turn a preserving parse into plain Python values (Decimal -> float)."""
    return orjson.loads(dumps(obj))
