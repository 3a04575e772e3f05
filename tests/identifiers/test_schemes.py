"""Table-driven tests of every national identifier scheme.

All checks run against a fixed reference date so century resolution and the
"born in the future" rule do not drift with the wall clock.
"""

from datetime import date

import pytest

from fhir_server.identifiers import (
    UnknownSchemeError,
    birth_date,
    check,
    normalise,
    sex,
    written_forms,
)

TODAY = date(2024, 6, 1)

SE_PNR = "http://electronichealth.se/identifier/personnummer"
SE_SAM = "http://electronichealth.se/identifier/samordningsnummer"
SE_RES = "http://electronichealth.se/identifier/nationelltReservnummer"
PL = "urn:oid:2.16.840.1.113883.3.4424.1.1.616"
DK = "urn:oid:1.2.208.176.1.2"
DK_X = "urn:oid:1.2.208.176.1.6.1.1"
NO_F = "urn:oid:2.16.578.1.12.4.1.4.1"
NO_D = "urn:oid:2.16.578.1.12.4.1.4.2"
FI = "urn:oid:1.2.246.21"

# (system, written value, canonical, birth date, sex)
VALID = [
    # Sweden: all written forms of Tolvan Tolvansson, born 1912
    (SE_PNR, "19121212-1212", "191212121212", date(1912, 12, 12), "male"),
    (SE_PNR, "191212121212", "191212121212", date(1912, 12, 12), "male"),
    (SE_PNR, "121212+1212", "191212121212", date(1912, 12, 12), "male"),
    # same digits with '-' (or none) are a person born 2012
    (SE_PNR, "121212-1212", "201212121212", date(2012, 12, 12), "male"),
    (SE_PNR, "1212121212", "201212121212", date(2012, 12, 12), "male"),
    (SE_PNR, " 991231-9986 ", "199912319986", date(1999, 12, 31), "female"),
    (SE_PNR, "000229-2381", "200002292381", date(2000, 2, 29), "female"),
    (SE_PNR, "990101+0000", "189901010000", date(1899, 1, 1), "female"),
    (SE_SAM, "701063-2391", "197010632391", date(1970, 10, 3), "male"),
    (SE_SAM, "19701063-2391", "197010632391", date(1970, 10, 3), "male"),
    (SE_SAM, "7010632391", "197010632391", date(1970, 10, 3), "male"),
    (SE_RES, " ab 12-x ", "AB12-X", None, None),
    # Poland
    (PL, "44051401359", "44051401359", date(1944, 5, 14), "male"),
    (PL, "02211307589", "02211307589", date(2002, 1, 13), "female"),
    (PL, "89123101128", "89123101128", date(1989, 12, 31), "female"),
    (PL, "99810112346", "99810112346", date(1899, 1, 1), "female"),
    (PL, "24210112340", "24210112340", date(2024, 1, 1), "female"),
    # Denmark
    (DK, "0707614285", "0707614285", date(1961, 7, 7), "male"),
    (DK, "070761-4285", "0707614285", date(1961, 7, 7), "male"),
    (DK, "0101374001", "0101374001", date(1937, 1, 1), "male"),
    (DK, "0101584001", "0101584001", date(1958, 1, 1), "male"),
    (DK, "0101585001", "0101585001", date(1858, 1, 1), "male"),
    (DK, "0101209001", "0101209001", date(2020, 1, 1), "male"),
    (DK, "0101105002", "0101105002", date(2010, 1, 1), "female"),
    (DK_X, "0203291WQ3", "0203291WQ3", date(1929, 3, 2), "male"),
    (DK_X, "1308781os6", "1308781OS6", date(1978, 8, 13), "female"),
    (DK_X, "130878-1OS6", "1308781OS6", date(1978, 8, 13), "female"),
    (DK_X, "3101057JC9", "3101057JC9", date(2005, 1, 31), "male"),
    # Norway
    (NO_F, "15108695088", "15108695088", date(1986, 10, 15), "female"),
    (NO_F, "151086 95088", "15108695088", date(1986, 10, 15), "female"),
    (NO_F, "151086-95088", "15108695088", date(1986, 10, 15), "female"),
    (NO_F, "01017012343", "01017012343", date(1970, 1, 1), "male"),
    (NO_F, "01010550048", "01010550048", date(2005, 1, 1), "female"),
    (NO_F, "01014590001", "01014590001", date(1945, 1, 1), "female"),
    (NO_F, "29022050034", "29022050034", date(2020, 2, 29), "female"),
    (NO_D, "41017012337", "41017012337", date(1970, 1, 1), "male"),
    (NO_D, "51077012358", "51077012358", date(1970, 7, 11), "male"),
    # Finland
    (FI, "131052-308T", "131052-308T", date(1952, 10, 13), "female"),
    (FI, "131052-308t", "131052-308T", date(1952, 10, 13), "female"),
    (FI, "010594-123W", "010594-123W", date(1994, 5, 1), "male"),
    (FI, "010594Y123W", "010594Y123W", date(1994, 5, 1), "male"),
    (FI, "020304B456E", "020304B456E", date(2004, 3, 2), "female"),
    (FI, "311299+7779", "311299+7779", date(1899, 12, 31), "male"),
    (FI, "290200A1206", "290200A1206", date(2000, 2, 29), "female"),
]


@pytest.mark.parametrize("system,value,canonical,born,gender", VALID)
def test_valid_numbers(system, value, canonical, born, gender):
    result = check(system, value, today=TODAY)
    assert result.ok, result.error
    assert result.error is None
    assert result.normalised == canonical
    assert result.scheme.system == system
    assert normalise(system, value, today=TODAY) == canonical
    assert birth_date(system, value, today=TODAY) == born
    assert sex(system, value, today=TODAY) == gender


@pytest.mark.parametrize("system,value,canonical,born,gender", VALID)
def test_written_forms_round_trip(system, value, canonical, born, gender):
    forms = written_forms(system, value, today=TODAY)
    assert forms[0] == canonical
    for form in forms:
        assert normalise(system, form, today=TODAY) == canonical


# (system, value, fragment expected in the error)
INVALID = [
    (SE_PNR, "19121212-1213", "checksum digit is wrong"),
    (SE_PNR, "121312+1211", "impossible date 1912-13-12"),
    (SE_PNR, "1213121211", "impossible date 2012-13-12"),
    (SE_PNR, "1302291214", "impossible date 2013-02-29"),
    (SE_PNR, "2412011237", "birth date 2024-12-01 is in the future"),
    (SE_PNR, "19121212+1212", "'+' separator"),
    (SE_PNR, "7010632391", "samordningsnummer"),
    (SE_PNR, "12121-21212", "expected"),
    (SE_PNR, "", "is empty"),
    (SE_SAM, "1212121212", "not a samordningsnummer day"),
    (SE_SAM, "701063-2392", "checksum digit is wrong"),
    (SE_RES, "   ", "is empty"),
    (PL, "44051401358", "checksum digit is wrong"),
    (PL, "99022900014", "impossible date 1999-02-29"),
    (PL, "02133100011", "impossible date 1902-13-31"),
    (PL, "24410112346", "in the future"),
    (PL, "4405140135", "expected 11 digits"),
    (DK, "3002601234", "impossible date 1960-02-30"),
    (DK, "0101364001", "birth date 2036-01-01 is in the future"),
    (DK, "0101575001", "in the future"),
    (DK, "010110500", "expected"),
    (DK, "01011050A1", "expected"),
    (DK_X, "0203292WQ3", "expected"),
    (DK_X, "0707614285", "expected"),
    (DK_X, "3002781OS6", "impossible date 1978-02-30"),
    (NO_F, "15108695077", "check digits are wrong"),
    (NO_F, "41017012337", "D-number"),
    (NO_F, "01504012480", "H-number"),
    (NO_F, "81017012320", "FH-number"),
    (NO_F, "01014576009", "not allocated"),
    (NO_F, "29022150055", "impossible date 2021-02-29"),
    (NO_D, "01017012343", "not a D-number day"),
    (NO_D, "41017012338", "check digits are wrong"),
    (FI, "131052-308U", "check character is wrong"),
    (FI, "290201A120E", "impossible date 2001-02-29"),
    (FI, "010190-900P", "temporary identifier"),
    (FI, "131052G308T", "expected"),
]


@pytest.mark.parametrize("system,value,fragment", INVALID)
def test_invalid_numbers(system, value, fragment):
    result = check(system, value, today=TODAY)
    assert not result.ok
    assert result.normalised is None
    assert fragment in result.error
    assert result.error.startswith(result.scheme.name)
    assert normalise(system, value, today=TODAY) is None
    assert written_forms(system, value, today=TODAY) == []
    assert birth_date(system, value, today=TODAY) is None
    assert sex(system, value, today=TODAY) is None


def test_error_message_names_scheme_and_value():
    result = check(SE_PNR, "19121212-1213", today=TODAY)
    assert result.error == "Swedish personnummer 19121212-1213: checksum digit is wrong"
    result = check(SE_PNR, "121312+1211", today=TODAY)
    assert result.error == "Swedish personnummer 121312+1211: impossible date 1912-13-12"


def test_check_accepts_alias_systems():
    assert check("1.2.752.129.2.1.3.1", "191212121212", today=TODAY).ok
    assert check("urn:oid:1.2.752.129.2.1.3.1", "191212121212", today=TODAY).ok
    assert check("http://hl7.no/fhir/NamingSystem/DNR", "41017012337", today=TODAY).ok
    assert not check("http://hl7.no/fhir/NamingSystem/FNR", "41017012337", today=TODAY).ok


def test_check_unknown_system_raises():
    with pytest.raises(UnknownSchemeError):
        check("http://example.org/mrn", "123")
    assert normalise("http://example.org/mrn", "123") is None
    assert written_forms("http://example.org/mrn", "123") == []
    assert birth_date("http://example.org/mrn", "123") is None
    assert sex(None, "123") is None


def test_default_reference_date_is_today():
    """Without `today` the wall clock is used; Tolvan is valid either way."""
    assert check(SE_PNR, "19121212-1212").ok
    assert normalise(SE_PNR, "121212+1212") == "191212121212"


# --- Sweden: century of 10-digit forms depends on the reference date


def test_se_century_moves_with_reference_date():
    # born 1 Dec: with '-' in mid-2024 it would be a 2024 birth in the future
    assert not check(SE_PNR, "241201-1237", today=date(2024, 6, 1)).ok
    assert normalise(SE_PNR, "241201-1237", today=date(2025, 1, 1)) == "202412011237"
    # someone born 1924 has '+' from 1 January 2024, the year they turn 100
    assert normalise(SE_PNR, "241201+1237", today=date(2024, 1, 1)) == "192412011237"
    assert normalise(SE_PNR, "241201-1237", today=date(2023, 12, 31)) == "192412011237"
    assert normalise(SE_PNR, "241201+1237", today=date(2023, 12, 31)) == "182412011237"


def test_se_written_forms_use_plus_for_centenarians():
    assert written_forms(SE_PNR, "192412011237", today=date(2024, 6, 1)) == [
        "192412011237",
        "19241201-1237",
        "241201+1237",
    ]
    assert written_forms(SE_PNR, "192412011237", today=date(2023, 6, 1)) == [
        "192412011237",
        "19241201-1237",
        "241201-1237",
        "2412011237",
    ]


def test_se_personnummer_and_samordningsnummer_are_disjoint():
    assert not check(SE_SAM, "191212121212", today=TODAY).ok
    assert not check(SE_PNR, "197010632391", today=TODAY).ok


# --- Denmark: no modulus 11 since 2007


@pytest.mark.parametrize("value", ["0101105001", "0101105003", "0101101234", "0101209001"])
def test_dk_mod11_failures_are_accepted(value):
    from stdnum.dk import cpr

    assert cpr.checksum(value) != 0  # would fail the old modulus 11 rule
    assert check(DK, value, today=TODAY).ok


# --- Finland: all century signs, including the 2023 additions


@pytest.mark.parametrize("sign", list("-YXWVU"))
def test_fi_1900s_signs(sign):
    value = f"010594{sign}123W"
    assert check(FI, value, today=TODAY).normalised == value
    assert birth_date(FI, value, today=TODAY) == date(1994, 5, 1)


@pytest.mark.parametrize("sign", list("ABCDEF"))
def test_fi_2000s_signs(sign):
    value = f"010504{sign}123N"
    assert check(FI, value, today=TODAY).normalised == value
    assert birth_date(FI, value, today=TODAY) == date(2004, 5, 1)
