"""Scheme table, system lookup, candidate search and NamingSystem output."""

import re
from datetime import date

import pytest
from fhir.resources.R4B.namingsystem import NamingSystem

from fhir_server.identifiers import (
    Scheme,
    all_schemes,
    candidates_without_system,
    canonical_system,
    naming_systems,
    scheme_for_system,
)

TODAY = date(2024, 6, 1)

EXPECTED = {
    # key: (country, canonical system, aliases, type code, self-service age)
    "se-personnummer": (
        "SE",
        "http://electronichealth.se/identifier/personnummer",
        ("urn:oid:1.2.752.129.2.1.3.1",),
        "NNSWE",
        13,
    ),
    "se-samordningsnummer": (
        "SE",
        "http://electronichealth.se/identifier/samordningsnummer",
        ("urn:oid:1.2.752.129.2.1.3.3",),
        "NNSWE",
        13,
    ),
    "se-nationellt-reservnummer": (
        "SE",
        "http://electronichealth.se/identifier/nationelltReservnummer",
        ("urn:oid:1.2.752.129.2.1.3.2",),
        "NI",
        13,
    ),
    "pl-pesel": ("PL", "urn:oid:2.16.840.1.113883.3.4424.1.1.616", (), "NNPOL", 16),
    "dk-cpr": ("DK", "urn:oid:1.2.208.176.1.2", (), "NNDNK", 15),
    "dk-x-ecpr": ("DK", "urn:oid:1.2.208.176.1.6.1.1", (), "NI", 15),
    "no-fodselsnummer": (
        "NO",
        "urn:oid:2.16.578.1.12.4.1.4.1",
        ("http://hl7.no/fhir/NamingSystem/FNR",),
        "NNNOR",
        16,
    ),
    "no-d-nummer": (
        "NO",
        "urn:oid:2.16.578.1.12.4.1.4.2",
        ("http://hl7.no/fhir/NamingSystem/DNR",),
        "NNNOR",
        16,
    ),
    "fi-hetu": ("FI", "urn:oid:1.2.246.21", (), "NNFIN", 15),
}


def test_table_matches_expectations():
    schemes = {s.key: s for s in all_schemes()}
    assert set(schemes) == set(EXPECTED)
    for key, (country, system, aliases, type_code, age) in EXPECTED.items():
        s = schemes[key]
        assert isinstance(s, Scheme)
        assert (s.country, s.system, s.aliases, s.type_code) == (country, system, aliases, type_code)
        assert s.self_service_age == age
        assert s.majority_age == 18


@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda s: s.key)
def test_lookup_by_every_system_form(scheme):
    forms = [scheme.system, *scheme.aliases]
    for uri in list(forms):
        if uri.startswith("urn:oid:"):
            forms += [uri[len("urn:oid:"):], "URN:OID:" + uri[len("urn:oid:"):], f" {uri} "]
    for form in forms:
        assert scheme_for_system(form) is scheme, form
        assert canonical_system(form) == scheme.system


def test_bare_oid_lookup_examples():
    assert scheme_for_system("1.2.752.129.2.1.3.1").key == "se-personnummer"
    assert scheme_for_system("2.16.840.1.113883.3.4424.1.1.616").key == "pl-pesel"
    assert scheme_for_system("1.2.208.176.1.2").key == "dk-cpr"


def test_unknown_systems():
    assert scheme_for_system(None) is None
    assert scheme_for_system("") is None
    assert scheme_for_system("http://example.org/mrn") is None
    assert scheme_for_system("1.2.752.129.2.1.3") is None
    assert canonical_system("http://example.org/mrn") == "http://example.org/mrn"
    assert canonical_system(None) is None


def test_candidates_without_system():
    assert candidates_without_system("19121212-1212", today=TODAY) == [
        ("http://electronichealth.se/identifier/personnummer", "191212121212")
    ]
    assert candidates_without_system("1308781OS6", today=TODAY) == [
        ("urn:oid:1.2.208.176.1.6.1.1", "1308781OS6")
    ]
    assert candidates_without_system("131052-308T", today=TODAY) == [
        ("urn:oid:1.2.246.21", "131052-308T")
    ]
    assert candidates_without_system("44051401359", today=TODAY) == [
        ("urn:oid:2.16.840.1.113883.3.4424.1.1.616", "44051401359")
    ]
    # a 10-digit number can be a Swedish and a Danish number at once
    both = candidates_without_system("1212121212", today=TODAY)
    assert ("http://electronichealth.se/identifier/personnummer", "201212121212") in both
    assert ("urn:oid:1.2.208.176.1.2", "1212121212") in both
    # free-format reserve numbers never match a bare value
    assert candidates_without_system("ABC123", today=TODAY) == []
    assert candidates_without_system("", today=TODAY) == []


def test_naming_systems_validate_as_r4b():
    resources = naming_systems()
    assert len(resources) == len(all_schemes())
    for res, scheme in zip(resources, all_schemes()):
        NamingSystem.model_validate(res)
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", res["id"])
        assert res["id"] == scheme.key
        assert res["status"] == "active" and res["kind"] == "identifier"
        assert res["type"]["coding"][0] == {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
            "code": scheme.type_code,
        }
        assert res["jurisdiction"][0]["coding"][0] == {
            "system": "urn:iso:std:iso:3166",
            "code": scheme.country,
        }
        preferred = [u for u in res["uniqueId"] if u.get("preferred")]
        assert preferred == [{"type": "uri", "value": scheme.system, "preferred": True}]
        for alias in scheme.aliases:
            if alias.startswith("urn:oid:"):
                assert {"type": "oid", "value": alias[8:]} in res["uniqueId"]
            else:
                assert {"type": "uri", "value": alias} in res["uniqueId"]


def test_naming_system_oid_entries_are_bare():
    for res in naming_systems():
        for uid in res["uniqueId"]:
            if uid["type"] == "oid":
                assert re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", uid["value"])


def test_systems_are_unique_across_schemes():
    seen = {}
    for s in all_schemes():
        for uri in s.all_systems():
            assert uri not in seen, (uri, seen.get(uri), s.key)
            seen[uri] = s.key
