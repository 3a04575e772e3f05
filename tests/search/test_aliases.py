"""Index-table aliases handed out from a pool while a statement is planned (search.aliases)."""

from __future__ import annotations

import pytest

from fhir_server.search.aliases import alias_of, planning
from fhir_server.storage.schema import idx_reference, idx_string


def test_aliases_are_distinct_within_a_statement_and_reused_across_statements():
    with planning():
        a0, a1, s0 = alias_of(idx_reference), alias_of(idx_reference), alias_of(idx_string)
    assert a0 is not a1
    with planning():
        b0, b1 = alias_of(idx_reference), alias_of(idx_reference)
    assert (b0, b1) == (a0, a1)  # the same objects: their column collections were built once
    assert alias_of(idx_reference) is not alias_of(idx_reference)  # outside planning: fresh each time
    assert s0.c.res_pk is not None


@pytest.fixture(scope="module", autouse=True)
def data(db):
    db.put({"resourceType": "Practitioner", "id": "gp1", "name": [{"family": "Nowak"}]})
    db.put({"resourceType": "Practitioner", "id": "gp2", "name": [{"family": "Nowak"}]})
    db.put({"resourceType": "Patient", "id": "pa", "name": [{"family": "Kowalska"}],
            "generalPractitioner": [{"reference": "Practitioner/gp1"}]})
    db.put({"resourceType": "Patient", "id": "pb", "name": [{"family": "Kowalska"}],
            "generalPractitioner": [{"reference": "Practitioner/gp2"}]})
    db.put({"resourceType": "Patient", "id": "pc", "name": [{"family": "Lind"}]})
    for oid, subject, code in (("oa", "pa", "8480-6"), ("ob", "pb", "8480-6"), ("oc", "pc", "8462-4")):
        db.put({"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": f"Patient/{subject}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}})


@pytest.mark.parametrize("query, expected", [
    # reference index inside the chain and around it: two aliases of idx_reference, one nested in the other
    ("subject:Patient.general-practitioner=Practitioner/gp1", {"oa"}),
    # the string index in the chain's subquery, the token index beside it
    ("subject:Patient.name=kowalska&code=http://loinc.org|8480-6", {"oa", "ob"}),
    # a chain two levels deep: resources, reference and string aliases at three depths
    ("subject:Patient.general-practitioner:Practitioner.name=nowak&subject:Patient.name=kowalska", {"oa", "ob"}),
    ("subject:Patient.general-practitioner=Practitioner/gp2&subject:Patient.name=kowalska", {"ob"}),
])
def test_nested_subqueries_with_pooled_aliases_find_the_right_rows(db, query, expected):
    assert db.set_ids("Observation", query) == expected


def test_has_with_a_chain_inside(db):
    assert db.set_ids("Patient", "_has:Observation:subject:code=http://loinc.org|8480-6&name=kowalska") == {"pa", "pb"}
    assert db.set_ids("Patient", "_has:Observation:subject:code=http://loinc.org|8462-4") == {"pc"}
