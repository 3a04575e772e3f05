"""National identifiers: any system alias and written form finds the same resource."""

from __future__ import annotations

import pytest

PNR = "http://electronichealth.se/identifier/personnummer"
PNR_OID = "urn:oid:1.2.752.129.2.1.3.1"
HETU = "urn:oid:1.2.246.21"
PESEL = "urn:oid:2.16.840.1.113883.3.4424.1.1.616"


@pytest.fixture(scope="module", autouse=True)
def data(db):
    db.put({"resourceType": "Patient", "id": "se", "identifier": [{"system": PNR_OID, "value": "19121212-1212"}]})
    db.put({"resourceType": "Patient", "id": "fi", "identifier": [{"system": HETU, "value": "131052-308T"}]})
    db.put({"resourceType": "Patient", "id": "pl", "identifier": [{"system": PESEL, "value": "02070803628"}]})
    db.put({"resourceType": "Patient", "id": "x", "identifier": [{"system": "urn:local", "value": "191212121212"}]})


def test_aliases_and_forms(db):
    for q in (f"identifier={PNR}|191212121212", f"identifier={PNR}|19121212-1212", f"identifier={PNR_OID}|191212121212",
              f"identifier={PNR}|121212%2B1212", f"identifier={PNR}|"):
        assert db.set_ids("Patient", q) == {"se"}, q
    assert db.set_ids("Patient", "identifier=19121212-1212") == {"se"}
    assert db.set_ids("Patient", "identifier=191212121212") == {"se", "x"}  # bare value: any system
    assert db.set_ids("Patient", f"identifier={HETU}|131052-308t") == {"fi"}


def test_of_type_from_scheme(db):
    q = "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|NNPOL|02070803628"
    assert db.set_ids("Patient", q) == {"pl"}


def test_stored_as_sent(db):
    b = db.bundle("Patient", "_id=se")
    assert b["entry"][0]["resource"]["identifier"][0] == {"system": PNR_OID, "value": "19121212-1212"}
