"""Property tests: numbers built here from first principles must validate,
decode to the date and sex they were built from, and every written form must
normalise to the same canonical value.

The check digits are computed independently of the engine (and of stdnum),
so an error in either shows up as a disagreement.
"""

from datetime import date, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fhir_server.identifiers import (
    birth_date,
    candidates_without_system,
    check,
    normalise,
    sex,
    written_forms,
)

TODAY = date(2024, 6, 1)

SE_PNR = "http://electronichealth.se/identifier/personnummer"
SE_SAM = "http://electronichealth.se/identifier/samordningsnummer"
PL = "urn:oid:2.16.840.1.113883.3.4424.1.1.616"
DK = "urn:oid:1.2.208.176.1.2"
DK_X = "urn:oid:1.2.208.176.1.6.1.1"
NO_F = "urn:oid:2.16.578.1.12.4.1.4.1"
NO_D = "urn:oid:2.16.578.1.12.4.1.4.2"
FI = "urn:oid:1.2.246.21"

SETTINGS = settings(max_examples=200, deadline=None)


def dates(lo: date, hi: date = TODAY):
    return st.integers(0, (hi - lo).days).map(lambda n: lo + timedelta(days=n))


def luhn_digit(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def gender(digit: str) -> str:
    return "male" if int(digit) % 2 else "female"


def assert_round_trip(system, value, canonical, born, sx):
    res = check(system, value, today=TODAY)
    assert res.ok, res.error
    assert res.normalised == canonical
    assert birth_date(system, value, today=TODAY) == born
    assert sex(system, value, today=TODAY) == sx
    forms = written_forms(system, value, today=TODAY)
    assert forms and forms[0] == canonical
    for form in forms:
        assert normalise(system, form, today=TODAY) == canonical
    assert (res.scheme.system, canonical) in candidates_without_system(value, today=TODAY)


# --- Sweden


@SETTINGS
@given(born=dates(date(1825, 1, 1)), serial=st.integers(0, 999), coord=st.booleans())
def test_se(born, serial, coord):
    system = SE_SAM if coord else SE_PNR
    day = born.day + (60 if coord else 0)
    ten_payload = f"{born:%y%m}{day:02d}{serial:03d}"
    ten = ten_payload + luhn_digit(ten_payload)
    canonical = f"{born.year}{ten[2:]}"
    sep = "+" if TODAY.year - born.year >= 100 else "-"
    sx = gender(ten[8])
    inputs = [canonical, f"{canonical[:8]}-{canonical[8:]}", f"{ten[:6]}{sep}{ten[6:]}"]
    if sep == "-":
        inputs.append(ten)
    for value in inputs:
        assert_round_trip(system, value, canonical, born, sx)
    # the other Swedish scheme must refuse it
    assert not check(SE_PNR if coord else SE_SAM, canonical, today=TODAY).ok


@SETTINGS
@given(born=dates(date(1930, 1, 1)), serial=st.integers(0, 999), bad=st.integers(1, 9))
def test_se_wrong_check_digit(born, serial, bad):
    payload = f"{born:%y%m%d}{serial:03d}"
    wrong = str((int(luhn_digit(payload)) + bad) % 10)
    res = check(SE_PNR, f"{born.year}{payload[2:]}{wrong}", today=TODAY)
    assert not res.ok and "checksum" in res.error


# --- Poland

PESEL_MONTH_OFFSET = {18: 80, 19: 0, 20: 20, 21: 40, 22: 60}


def pesel(born: date, serial: int) -> str:
    month = born.month + PESEL_MONTH_OFFSET[born.year // 100]
    payload = f"{born:%y}{month:02d}{born:%d}{serial:04d}"
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    return payload + str(-sum(w * int(c) for w, c in zip(weights, payload)) % 10)


@SETTINGS
@given(born=dates(date(1800, 1, 1)), serial=st.integers(0, 9999))
def test_pesel(born, serial):
    value = pesel(born, serial)
    assert_round_trip(PL, value, value, born, gender(value[9]))


@SETTINGS
@given(born=dates(TODAY + timedelta(days=1), date(2299, 12, 31)), serial=st.integers(0, 9999))
def test_pesel_future_rejected(born, serial):
    assert not check(PL, pesel(born, serial), today=TODAY).ok


# --- Denmark


def cpr_seventh_digits(year: int) -> list[int]:
    """7th digits that place a two-digit year in `year`'s century."""
    yy = year % 100
    out = []
    for d in range(10):
        if d <= 3:
            century = 1900
        elif d in (4, 9):
            century = 2000 if yy <= 36 else 1900
        else:
            century = 2000 if yy <= 57 else 1800
        if century + yy == year:
            out.append(d)
    return out


@SETTINGS
@given(born=dates(date(1858, 1, 1)), rest=st.integers(0, 999), pick=st.integers(0, 9))
def test_cpr(born, rest, pick):
    digits = cpr_seventh_digits(born.year)
    assume(digits)
    seq = f"{digits[pick % len(digits)]}{rest:03d}"
    canonical = f"{born:%d%m%y}{seq}"
    for value in (canonical, f"{canonical[:6]}-{seq}"):
        assert_round_trip(DK, value, canonical, born, gender(seq[3]))


@SETTINGS
@given(
    born=dates(date(1900, 1, 1)),
    letters=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2),
    g=st.integers(0, 9),
)
def test_x_ecpr(born, letters, g):
    c = "1" if born.year < 2000 else "7"
    canonical = f"{born:%d%m%y}{c}{letters}{g}"
    for value in (canonical, canonical.lower(), f"{canonical[:6]}-{canonical[6:]}"):
        assert_round_trip(DK_X, value, canonical, born, gender(str(g)))
    assert not check(DK, canonical, today=TODAY).ok


# --- Norway


def no_check_digits(payload: str) -> str | None:
    w1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
    w2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
    k1 = -sum(w * int(c) for w, c in zip(w1, payload)) % 11
    if k1 == 10:
        return None
    k2 = -sum(w * int(c) for w, c in zip(w2, payload + str(k1))) % 11
    if k2 == 10:
        return None
    return f"{k1}{k2}"


def no_individual_ranges(year: int) -> list[range]:
    """Individual-number ranges Skatteetaten allocates to a birth year."""
    if 1854 <= year <= 1899:
        return [range(500, 750)]
    if 1900 <= year <= 1999:
        return [range(0, 500)] + ([range(900, 1000)] if year >= 1940 else [])
    if 2000 <= year <= 2039:
        return [range(500, 1000)]
    return []


@SETTINGS
@given(born=dates(date(1854, 1, 1)), pick=st.integers(0, 10**6), d_number=st.booleans())
def test_norway(born, pick, d_number):
    ranges = no_individual_ranges(born.year)
    individual = [i for r in ranges for i in r][pick % sum(len(r) for r in ranges)]
    day = born.day + (40 if d_number else 0)
    payload = f"{day:02d}{born:%m%y}{individual:03d}"
    k = no_check_digits(payload)
    assume(k is not None)
    canonical = payload + k
    system, other = (NO_D, NO_F) if d_number else (NO_F, NO_D)
    for value in (canonical, f"{canonical[:6]} {canonical[6:]}"):
        assert_round_trip(system, value, canonical, born, gender(payload[8]))
    assert not check(other, canonical, today=TODAY).ok


# --- Finland

HETU_SIGNS = {18: "+", 19: "-YXWVU", 20: "ABCDEF"}
HETU_ALPHABET = "0123456789ABCDEFHJKLMNPRSTUVWXY"


@SETTINGS
@given(born=dates(date(1800, 1, 1)), individual=st.integers(2, 899), pick=st.integers(0, 5))
def test_hetu(born, individual, pick):
    signs = HETU_SIGNS[born.year // 100]
    sign = signs[pick % len(signs)]
    control = HETU_ALPHABET[int(f"{born:%d%m%y}{individual:03d}") % 31]
    canonical = f"{born:%d%m%y}{sign}{individual:03d}{control}"
    for value in (canonical, canonical.lower()):
        assert_round_trip(FI, value, canonical, born, gender(str(individual % 10)))
