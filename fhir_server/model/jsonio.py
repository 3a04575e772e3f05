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


class JsonDecimal(Decimal):
    """A Decimal that remembers the literal it was parsed from (`1.0e3` stays so)."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> "JsonDecimal":
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def parse_plain(body: bytes | str) -> Any:
    """Fast parse for validation and indexing (decimals become floats)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FhirError.of(400, "structure", f"Malformed JSON: {exc}") from None


def parse_preserving(body: bytes | str) -> Any:
    """Parse keeping decimal literals exactly as written (for storage)."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FhirError.of(400, "structure", f"The body is not UTF-8: {exc}") from None
    try:
        return json.loads(body, parse_float=JsonDecimal)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FhirError.of(400, "structure", f"Malformed JSON: {exc}") from None


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
