"""Value normalisation shared by write-time extraction and query building.

Both sides must normalise identically, or a search silently misses; so every
rule (string folding, date ranges, number precision, reference parsing) lives
here once.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from dateutil.relativedelta import relativedelta

# Column widths of the index tables (PostgreSQL enforces VARCHAR lengths).
LEN_NORM = 512
LEN_SYSTEM = 512
LEN_CODE = 512
LEN_TYPE_SYSTEM = 256
LEN_TYPE_CODE = 64
LEN_Q_SYSTEM = 256
LEN_Q_CODE = 64
LEN_URI = 1024
LEN_TYPE = 64
LEN_ID = 64

# Letters NFKD does not decompose but users expect to fold (Nordic/Polish names).
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "ł": "l", "đ": "d", "þ": "th", "œ": "oe", "ð": "d", "ı": "i"})


def normalize(text: str) -> str:
    """NFKD, strip combining marks, casefold: `muller` finds `Müller`, `sorensen` finds `Sørensen`."""
    if text.isascii():  # NFKD and the fold table leave ASCII alone; casefold is lower there
        return text.lower()[:LEN_NORM]
    return _normalize_unicode(text)


@lru_cache(maxsize=8192)
def _normalize_unicode(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    if not decomposed.isascii():
        decomposed = "".join([c for c in decomposed if not unicodedata.combining(c)])
    return decomposed.casefold().translate(_FOLD)[:LEN_NORM]


def _normalize_slow(text: str) -> str:
    """The reference definition of normalize(), kept for tests of the fast paths."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold().translate(_FOLD)[:LEN_NORM]


def cut(value: str | None, n: int) -> str | None:
    return value[:n] if isinstance(value, str) else value


# ---------------------------------------------------------------- dates

_DATE_RE = re.compile(
    r"^([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?$"
)
MIN_DT = datetime(1, 1, 1, tzinfo=timezone.utc)
MAX_DT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


@lru_cache(maxsize=16384)  # results are immutable; Synthea repeats timestamps a lot
def parse_date_range(text: str) -> tuple[datetime | None, datetime | None]:
    """A FHIR date/dateTime/instant as the UTC half-open range its precision implies.

    "2013" -> [2013-01-01, 2014-01-01); "2013-01-14T10:00:00+01:00" ->
    [09:00:00Z, 09:00:01Z). A dateTime with a time but no offset is taken as
    UTC (the spec leaves it to the server; UTC keeps results host-independent).
    None as high means the range runs past year 9999.
    """
    m = _DATE_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a valid FHIR date/dateTime: {text!r}")
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        if mo is None:
            low = datetime(int(y), 1, 1, tzinfo=timezone.utc)
            step: timedelta | relativedelta = relativedelta(years=1)
        elif d is None:
            low = datetime(int(y), int(mo), 1, tzinfo=timezone.utc)
            step = relativedelta(months=1)
        elif hh is None:
            low = datetime(int(y), int(mo), int(d), tzinfo=timezone.utc)
            step = timedelta(days=1)
        else:
            micro = 0
            if ss is None:
                step = timedelta(minutes=1)
            elif frac:
                digits = frac[1:7]
                micro = int(digits.ljust(6, "0"))
                step = timedelta(microseconds=10 ** (6 - len(digits)))
            else:
                step = timedelta(seconds=1)
            h = int(hh)
            extra = timedelta(0)
            if h == 24:  # 24:00:00 is end of day
                h, extra = 0, timedelta(days=1)
            tzinfo = timezone.utc
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
            low = datetime(int(y), int(mo), int(d), h, int(mi), int(ss or 0), micro, tzinfo=tzinfo) + extra
            low = low.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid FHIR date/dateTime: {text!r}") from exc
    try:
        high = low + step
    except (OverflowError, ValueError):  # past year 9999
        high = None
    return low, high


def to_utc(value: datetime) -> datetime:
    """Aware UTC, whatever the driver returned (SQLite gives naive UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


# ---------------------------------------------------------------- numbers


def parse_number(text: str) -> tuple[float, float, float]:
    """A search number and the range its written precision implies ("100" -> [99.5, 100.5))."""
    t = text.strip()
    try:
        dec = Decimal(t)
    except InvalidOperation as exc:
        raise ValueError(f"not a valid number: {text!r}") from exc
    if not dec.is_finite():
        raise ValueError(f"not a valid number: {text!r}")
    exp = dec.as_tuple().exponent
    assert isinstance(exp, int)
    if "e" in t.lower():
        half = Decimal(1).scaleb(exp) / 2
    else:
        half = Decimal(1).scaleb(exp) / 2
    return float(dec), float(dec - half), float(dec + half)


# ---------------------------------------------------------------- references

_REF_RE = re.compile(r"^(?:(?P<base>.*)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-\.]{1,64})(?:/_history/[^/]+)?$")


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """(target_type, target_id, url): relative refs give type/id, anything else a url."""
    if ref.startswith("#") or ref.startswith("urn:"):
        return None, None, ref
    m = _REF_RE.match(ref)
    if m and not m.group("base"):
        return m.group("type"), m.group("id"), None
    if m and "://" in ref:
        url = ref.split("/_history/", 1)[0]
        return None, None, url
    return None, None, ref


def split_type_id(ref: str) -> tuple[str | None, str | None]:
    """Type and id of any reference string, relative or absolute (for `resolve() is T`)."""
    m = _REF_RE.match(ref)
    if m:
        return m.group("type"), m.group("id")
    return None, None


# ---------------------------------------------------------------- escaping


def split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` not preceded by a backslash; escapes are kept for a later unescape."""
    parts, cur, i, n = [], [], 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep and (maxsplit < 0 or n < maxsplit):
            parts.append("".join(cur))
            cur = []
            n += 1
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", text)


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ---------------------------------------------------------------- UCUM (small canonical table)

# code -> (canonical code, factor): enough for common clinical units; others stay as sent.
_UCUM: dict[str, tuple[str, float]] = {
    "kg": ("g", 1e3), "g": ("g", 1.0), "mg": ("g", 1e-3), "ug": ("g", 1e-6), "ng": ("g", 1e-9),
    "[lb_av]": ("g", 453.59237), "[oz_av]": ("g", 28.349523125),
    "km": ("m", 1e3), "m": ("m", 1.0), "cm": ("m", 1e-2), "mm": ("m", 1e-3), "um": ("m", 1e-6),
    "[in_i]": ("m", 0.0254), "[ft_i]": ("m", 0.3048),
    "L": ("L", 1.0), "l": ("L", 1.0), "dL": ("L", 0.1), "mL": ("L", 1e-3), "uL": ("L", 1e-6),
    "s": ("s", 1.0), "ms": ("s", 1e-3), "min": ("s", 60.0), "h": ("s", 3600.0), "d": ("s", 86400.0),
    "wk": ("s", 604800.0), "mo": ("s", 2629800.0), "a": ("s", 31557600.0),
    "mmol/L": ("mol/L", 1e-3), "umol/L": ("mol/L", 1e-6), "mol/L": ("mol/L", 1.0),
    "g/dL": ("g/L", 10.0), "mg/dL": ("g/L", 1e-2), "g/L": ("g/L", 1.0), "mg/L": ("g/L", 1e-3),
    "mm[Hg]": ("mm[Hg]", 1.0), "kPa": ("mm[Hg]", 7.50061683),
}
UCUM_SYSTEM = "http://unitsofmeasure.org"


def ucum_canonical(code: str | None, value: float) -> tuple[str | None, float | None]:
    if not code or code not in _UCUM:
        return None, None
    c, f = _UCUM[code]
    return c, value * f
