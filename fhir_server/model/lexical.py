"""Lexical forms of numbers in URLs and headers (version ids, `_count`, ETags).

FHIR's numbers are written in ASCII digits (R4 §2.24.0.1: `integer` is
`[0]|[-+]?[1-9][0-9]*`, an `id` is `[A-Za-z0-9\\-\\.]{1,64}`). Python's `int()`
and `\\d` also take other scripts' digits ("١" is 1), superscripts fail late,
and big values overflow the database's 32/64-bit columns; every number the
server reads from a request goes through `ascii_int` instead.
"""

from __future__ import annotations

import re

from ..errors import FhirError

_INT = re.compile(r"[+-]?[0-9]{1,18}")
INT32_MAX = 2**31 - 1


def ascii_int(text: str, name: str, *, minimum: int | None = 0, maximum: int = INT32_MAX, status: int = 400) -> int:
    """`text` as an integer written in ASCII digits within [minimum, maximum];
    otherwise a FhirError (`status`, 400 by default) naming the parameter."""
    value = text.strip() if isinstance(text, str) else text
    if not isinstance(value, str) or not _INT.fullmatch(value):
        raise FhirError.of(status, "invalid" if status == 400 else "not-found", f"{name} must be a whole number written in digits 0-9, not '{text}'", name)
    n = int(value)
    if (minimum is not None and n < minimum) or n > maximum:
        low = "" if minimum is None else f"{minimum} to "
        raise FhirError.of(status, "invalid" if status == 400 else "not-found", f"{name} must lie in {low}{maximum}, not {value}", name)
    return n


def is_version_id(text: str) -> bool:
    """A version id this server can have issued: 1-9 ASCII digits."""
    return re.fullmatch(r"[0-9]{1,9}", text) is not None and int(text) > 0
