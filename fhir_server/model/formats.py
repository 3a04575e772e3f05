"""Lexical rules of the FHIR R4 primitive types (http://hl7.org/fhir/R4/datatypes.html).

The regular expressions are the specification's; dates are also checked
against the calendar (the regexes accept 1990-02-30).
"""

from __future__ import annotations

import calendar
import re

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_TZ = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"

PATTERNS: dict[str, re.Pattern] = {
    "date": re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?"),
    "dateTime": re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_TZ})?)?)?"),
    "instant": re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_TZ}"),
    "time": re.compile(_TIME),
    "code": re.compile(r"[^\s]+(\s[^\s]+)*"),
    "id": re.compile(r"[A-Za-z0-9\-\.]{1,64}"),
    "oid": re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+"),
    "uuid": re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "uri": re.compile(r"\S*"),
    "url": re.compile(r"\S*"),
    "canonical": re.compile(r"\S*"),
    "base64Binary": re.compile(r"[0-9a-zA-Z+/=\s]+"),
}

_DESCRIBE = {
    "date": "YYYY, YYYY-MM or YYYY-MM-DD",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone",
    "instant": "YYYY-MM-DDThh:mm:ss(.sss) with a time zone",
    "time": "hh:mm:ss",
    "code": "no leading, trailing or double whitespace",
    "id": "1-64 characters of A-Z a-z 0-9 - .",
    "oid": "urn:oid:<digits and dots>",
    "uuid": "urn:uuid:<lower-case UUID>",
    "uri": "no whitespace",
    "url": "no whitespace",
    "canonical": "no whitespace",
    "base64Binary": "base64 characters",
}


def format_error(fhir_type: str, value: str) -> str | None:
    """None when `value` is a valid lexical form of `fhir_type`, else what is wrong."""
    pattern = PATTERNS.get(fhir_type)
    if pattern is None:
        return None
    if not pattern.fullmatch(value):
        return f"expected {_DESCRIBE[fhir_type]}"
    if fhir_type in ("date", "dateTime", "instant") and len(value) >= 10:
        year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
        if day > calendar.monthrange(year, month)[1]:
            return f"{value[:10]} is not a calendar date"
    return None
