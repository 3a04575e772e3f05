"""Per-scheme parsing of national person identifiers.

Each validator turns a written number into a :class:`Parsed` value or raises
:class:`Invalid` with a short reason.  Checksums come from python-stdnum; the
rest (samordningsnummer, D-numbers, injectable reference date, Danish
post-2007 numbers, X-eCPR, ...) is what stdnum does not cover or does only
against the wall clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

from stdnum import luhn
from stdnum.exceptions import ValidationError
from stdnum.fi import hetu as _hetu
from stdnum.no import fodselsnummer as _fnr
from stdnum.pl import pesel as _pesel

__all__ = ["Invalid", "Parsed", "VALIDATORS"]


class Invalid(ValueError):
    """A number does not satisfy its scheme; the message says why."""


@dataclass(frozen=True)
class Parsed:
    """A valid number: canonical form plus what the number encodes."""

    normalised: str
    birth_date: date | None = None
    sex: str | None = None
    written_forms: tuple[str, ...] = field(default=())


Validator = Callable[[str, date], Parsed]


# --------------------------------------------------------------------------- helpers


def _sex(digit: str) -> str:
    """Odd individual digit means male in every scheme handled here."""
    return "male" if int(digit) % 2 else "female"


def _make_date(year: int, month: int, day: int, today: date) -> date:
    """Build the birth date or explain why it cannot be one."""
    try:
        born = date(year, month, day)
    except ValueError:
        raise Invalid(f"impossible date {year:04d}-{month:02d}-{day:02d}") from None
    if born > today:
        raise Invalid(f"birth date {born.isoformat()} is in the future")
    return born


def _latest_year(yy: int, not_after: int) -> int:
    """Latest year <= not_after whose last two digits are yy."""
    return not_after - ((not_after - yy) % 100)


# --------------------------------------------------------------------------- Sweden

_SE_RE = re.compile(r"^(\d{2})?(\d{2})(\d{2})(\d{2})([-+]?)(\d{3})(\d)$")


def _se(value: str, today: date, day_offset: int) -> Parsed:
    """Personnummer (day_offset 0) and samordningsnummer (day_offset 60).

    Ten-digit forms carry no century: '-' means the holder is under 100 in
    the reference year, '+' that they turn 100 or more that year (the
    separator changes on 1 January of the year they turn 100).
    """
    m = _SE_RE.match(value)
    if not m:
        raise Invalid("expected YYYYMMDD-NNNC, YYYYMMDDNNNC, YYMMDD-NNNC or YYMMDD+NNNC")
    cc, yy, mm, dd, sep, serial, check = m.groups()
    written_day = int(dd)
    if day_offset:
        if written_day <= day_offset:
            raise Invalid(
                f"day {dd} is not a samordningsnummer day (birth day + {day_offset})"
            )
    elif written_day > 60:
        raise Invalid(f"day {dd} marks a samordningsnummer (birth day + 60), not a personnummer")
    if cc is not None:
        if sep == "+":
            raise Invalid("the '+' separator is only used in the 10-digit form")
        year = int(cc + yy)
    else:
        limit = today.year - 100 if sep == "+" else today.year
        year = _latest_year(int(yy), limit)
    born = _make_date(year, int(mm), written_day - day_offset, today)
    ten = f"{yy}{mm}{dd}{serial}{check}"
    if not luhn.is_valid(ten):
        raise Invalid("checksum digit is wrong")
    canonical = f"{year:04d}{mm}{dd}{serial}{check}"
    forms = [canonical, f"{canonical[:8]}-{canonical[8:]}"]
    age_in_year = today.year - year
    if age_in_year < 100:
        forms += [f"{ten[:6]}-{ten[6:]}", ten]
    elif age_in_year < 200:
        forms.append(f"{ten[:6]}+{ten[6:]}")
    return Parsed(canonical, born, _sex(serial[2]), tuple(forms))


def se_personnummer(value: str, today: date) -> Parsed:
    return _se(value, today, 0)


def se_samordningsnummer(value: str, today: date) -> Parsed:
    return _se(value, today, 60)


def nonempty_token(value: str, today: date) -> Parsed:
    """Reserve numbers have no national layout: keep them, minus spaces."""
    token = re.sub(r"\s+", "", value).upper()
    if not token:
        raise Invalid("is empty")
    return Parsed(token, None, None, (token,))


# --------------------------------------------------------------------------- Poland


def pl_pesel(value: str, today: date) -> Parsed:
    """PESEL: YYMMDDZZZXQ, century in the month (+80/0/+20/+40/+60)."""
    if not re.fullmatch(r"\d{11}", value):
        raise Invalid("expected 11 digits")
    yy, mm, dd = int(value[0:2]), int(value[2:4]), int(value[4:6])
    century = {0: 1900, 1: 2000, 2: 2100, 3: 2200, 4: 1800}[mm // 20]
    born = _make_date(century + yy, mm % 20, dd, today)
    if value[10] != _pesel.calc_check_digit(value[:10]):
        raise Invalid("checksum digit is wrong")
    return Parsed(value, born, _sex(value[9]), (value,))


# --------------------------------------------------------------------------- Denmark

_DK_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})-?(\d{4})$")


def _cpr_century(digit7: int, yy: int) -> int:
    """Century of a CPR number from its 7th digit (CPR-kontoret table)."""
    if digit7 <= 3:
        return 1900
    if digit7 in (4, 9):
        return 2000 if yy <= 36 else 1900
    return 2000 if yy <= 57 else 1800  # 5-8


def dk_cpr(value: str, today: date) -> Parsed:
    """CPR: only the date is checked; modulus 11 was abandoned in 2007."""
    m = _DK_RE.match(value)
    if not m:
        raise Invalid("expected DDMMYYSSSS or DDMMYY-SSSS")
    dd, mm, yy, seq = m.groups()
    year = _cpr_century(int(seq[0]), int(yy)) + int(yy)
    born = _make_date(year, int(mm), int(dd), today)
    canonical = f"{dd}{mm}{yy}{seq}"
    return Parsed(canonical, born, _sex(seq[3]), (canonical, f"{canonical[:6]}-{seq}"))


_XECPR_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})-?([17])([A-Z]{2})(\d)$")


def dk_x_ecpr(value: str, today: date) -> Parsed:
    """X-eCPR: DDMMYYCAAG, C = 1 (1900s) or 7 (2000s), AA letters, G sex."""
    m = _XECPR_RE.match(value.upper())
    if not m:
        raise Invalid("expected DDMMYYCAAG (C is 1 or 7, AA two letters A-Z, G a digit)")
    dd, mm, yy, c, letters, g = m.groups()
    year = (1900 if c == "1" else 2000) + int(yy)
    born = _make_date(year, int(mm), int(dd), today)
    canonical = f"{dd}{mm}{yy}{c}{letters}{g}"
    return Parsed(
        canonical, born, _sex(g), (canonical, f"{canonical[:6]}-{canonical[6:]}")
    )


# --------------------------------------------------------------------------- Norway

_NO_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})[ -]?(\d{3})(\d)(\d)$")


def _no_century(individual: int, yy: int) -> int | None:
    """Century from the individual number (Skatteetaten allocation table)."""
    if individual < 500:
        return 1900
    if individual < 750 and yy >= 54:
        return 1800
    if yy < 40:
        return 2000
    if individual >= 900:
        return 1900
    return None


def _no(value: str, today: date, d_number: bool) -> Parsed:
    """Fødselsnummer or D-number (day + 40); H-numbers (month + 40), FH-numbers
    (first digit 8/9) and synthetic test numbers (month + 80) are rejected."""
    m = _NO_RE.match(value)
    if not m:
        raise Invalid("expected 11 digits (DDMMYYIIIKK)")
    dd, mm, yy, ind, k1, k2 = m.groups()
    day, month = int(dd), int(mm)
    if day >= 80:
        raise Invalid("first digit 8 or 9 marks an FH-number, which is not supported")
    if d_number:
        if not 41 <= day <= 71:
            raise Invalid(f"day {dd} is not a D-number day (birth day + 40)")
        day -= 40
    elif 41 <= day <= 71:
        raise Invalid(f"day {dd} marks a D-number (birth day + 40), not a fødselsnummer")
    if month > 40:
        raise Invalid(f"month {mm} marks an H-number or synthetic number, which is not supported")
    century = _no_century(int(ind), int(yy))
    if century is None:
        raise Invalid(f"individual number {ind} is not allocated for year {yy}")
    born = _make_date(century + int(yy), month, day, today)
    digits = f"{dd}{mm}{yy}{ind}{k1}{k2}"
    if k1 != _fnr.calc_check_digit1(digits[:9]) or k2 != _fnr.calc_check_digit2(digits[:10]):
        raise Invalid("check digits are wrong")
    return Parsed(digits, born, _sex(ind[2]), (digits, f"{digits[:6]} {digits[6:]}"))


def no_fodselsnummer(value: str, today: date) -> Parsed:
    return _no(value, today, False)


def no_d_nummer(value: str, today: date) -> Parsed:
    return _no(value, today, True)


# --------------------------------------------------------------------------- Finland

_HETU_CENTURY = {"+": 1800, **dict.fromkeys("-YXWVU", 1900), **dict.fromkeys("ABCDEF", 2000)}
_HETU_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})([-+YXWVUABCDEF])(\d{3})([0-9A-Y])$")


def fi_hetu(value: str, today: date) -> Parsed:
    """HETU DDMMYYCZZZQ.  The century sign is part of the identity (the 2023
    signs widen the number pool), so it is kept, not rewritten to '-'/'A'.
    Individual numbers 900-999 are temporary identifiers and rejected."""
    canonical = value.upper()
    m = _HETU_RE.match(canonical)
    if not m:
        raise Invalid("expected DDMMYYCZZZQ with century sign + - Y X W V U A B C D E F")
    dd, mm, yy, sign, ind, _ = m.groups()
    born = _make_date(_HETU_CENTURY[sign] + int(yy), int(mm), int(dd), today)
    if int(ind) < 2:
        raise Invalid(f"individual number {ind} is not issued")
    if int(ind) >= 900:
        raise Invalid(f"individual number {ind} is a temporary identifier")
    try:
        _hetu.validate(canonical)
    except ValidationError:
        raise Invalid("check character is wrong") from None
    return Parsed(canonical, born, _sex(ind[2]), (canonical, canonical.lower()))


VALIDATORS: dict[str, Validator] = {
    "se_personnummer": se_personnummer,
    "se_samordningsnummer": se_samordningsnummer,
    "nonempty_token": nonempty_token,
    "pl_pesel": pl_pesel,
    "dk_cpr": dk_cpr,
    "dk_x_ecpr": dk_x_ecpr,
    "no_fodselsnummer": no_fodselsnummer,
    "no_d_nummer": no_d_nummer,
    "fi_hetu": fi_hetu,
}
