"""Chaining, _has, includes, sorting, keyset paging, totals, projection, compartments."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.errors import FhirError

BASE = "http://test.local/fhir"  # as in conftest


@pytest.fixture(scope="module", autouse=True)
def data(db):
    db.put({"resourceType": "Organization", "id": "org1", "name": "Acme"})
    db.put({"resourceType": "Organization", "id": "org2", "name": "Other", "partOf": {"reference": "Organization/org1"}})
    db.put({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "House"}]})
    db.put({"resourceType": "Patient", "id": "p1", "name": [{"family": "Smith", "given": ["Ann"]}],
            "birthDate": "1970-01-01", "managingOrganization": {"reference": "Organization/org2"},
            "generalPractitioner": [{"reference": "Practitioner/dr1"}]})
    db.put({"resourceType": "Patient", "id": "p2", "name": [{"family": "Jones", "given": ["Bob"]}],
            "birthDate": "1980-01-01", "managingOrganization": {"reference": "Organization/org1"}})
    db.put({"resourceType": "Patient", "id": "p3", "name": [{"family": "Adams"}]})
    db.put({"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/p1"}})
    for i, (pid, code) in enumerate([("p1", "8480-6"), ("p1", "29463-7"), ("p2", "8480-6"), ("p3", "1-1")]):
        db.put({"resourceType": "Observation", "id": f"o{i + 1}", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": "Encounter/e1"} if i == 0 else None,
                "performer": [{"reference": "Practitioner/dr1"}] if i == 1 else []})
    db.put({"resourceType": "Provenance", "id": "prov1", "target": [{"reference": "Observation/o1"}],
            "recorded": "2020-01-01T00:00:00Z", "agent": [{"who": {"reference": "Practitioner/dr1"}}]})


# ------------------------------------------------------------------ chaining / _has


def test_chain(db):
    assert db.set_ids("Observation", "subject:Patient.name=smith") == {"o1", "o2"}
    assert db.set_ids("Observation", "patient.name=jones") == {"o3"}
    assert db.set_ids("Observation", "patient.birthdate=lt1975") == {"o1", "o2"}
    assert db.set_ids("Observation", "subject:Patient.organization.name=acme") == {"o3"}  # two levels
    assert db.set_ids("Observation", "subject:Patient.organization.partof.name=acme") == {"o1", "o2"}  # three
    assert db.set_ids("Observation", "patient.name=smith,jones") == {"o1", "o2", "o3"}


def test_chain_ambiguous_and_unknown(db):
    with pytest.raises(FhirError) as ei:
        db.ids("Observation", "subject.name=smith")
    assert "ambiguous" in ei.value.issues[0].diagnostics
    with pytest.raises(FhirError):
        db.ids("Observation", "patient.nope=x")
    with pytest.raises(FhirError):
        db.ids("Observation", "status.name=x")


def test_has(db):
    assert db.set_ids("Patient", "_has:Observation:patient:code=8480-6") == {"p1", "p2"}
    assert db.set_ids("Patient", "_has:Observation:patient:code=29463-7") == {"p1"}
    assert db.set_ids("Patient", "_has:Observation:subject:code=1-1") == {"p3"}
    # nested: patients with an observation that has a provenance record
    assert db.set_ids("Patient", "_has:Observation:patient:_has:Provenance:target:_id=prov1") == {"p1"}
    assert db.set_ids("Practitioner", "_has:Observation:performer:code=29463-7") == {"dr1"}
    with pytest.raises(FhirError):
        db.ids("Patient", "_has:Observation:code:status=final")  # code is not a reference
    with pytest.raises(FhirError):
        db.ids("Patient", "_has:Observation=x")


# ------------------------------------------------------------------ includes


def _by_mode(b):
    out = {}
    for e in b.get("entry", []):
        out.setdefault(e["search"]["mode"], []).append(f'{e["resource"]["resourceType"]}/{e["resource"]["id"]}')
    return out


def test_include(db):
    b = db.bundle("Observation", "_id=o1,o2&_include=Observation:subject")
    m = _by_mode(b)
    assert sorted(m["match"]) == ["Observation/o1", "Observation/o2"]
    assert m["include"] == ["Patient/p1"]  # included once
    assert b["total"] == 2  # includes never count
    b = db.bundle("Observation", "_id=o1,o2&_include=Observation:*")
    assert set(_by_mode(b)["include"]) == {"Patient/p1", "Encounter/e1", "Practitioner/dr1"}
    b = db.bundle("Observation", "_id=o2&_include=Observation:performer:Patient")
    assert "include" not in _by_mode(b)


def test_include_iterate_and_revinclude(db):
    b = db.bundle("Observation", "_id=o1&_include=Observation:subject&_include:iterate=Patient:organization"
                  "&_include:iterate=Organization:partof")
    assert set(_by_mode(b)["include"]) == {"Patient/p1", "Organization/org2", "Organization/org1"}
    b = db.bundle("Observation", "_id=o1&_include=Observation:subject&_include=Patient:organization")
    assert set(_by_mode(b)["include"]) == {"Patient/p1"}  # without :iterate only matches are followed
    b = db.bundle("Patient", "_id=p1&_revinclude=Observation:subject")
    assert set(_by_mode(b)["include"]) == {"Observation/o1", "Observation/o2"}
    b = db.bundle("Patient", "_id=p1&_revinclude=Observation:subject&_revinclude:iterate=Provenance:target")
    assert set(_by_mode(b)["include"]) == {"Observation/o1", "Observation/o2", "Provenance/prov1"}
    with pytest.raises(FhirError):
        db.bundle("Patient", "_include=Patient:name")
    with pytest.raises(FhirError):
        db.bundle("Patient", "_include=garbage")


def test_include_per_page(db):
    b = db.bundle("Observation", "_count=1&_sort=_id&_include=Observation:subject")
    m = _by_mode(b)
    assert m["match"] == ["Observation/o1"] and m["include"] == ["Patient/p1"]
    nxt = _link(b, "next")
    b2 = db.bundle("Observation", _params(nxt))
    assert _by_mode(b2)["match"] == ["Observation/o2"]


# ------------------------------------------------------------------ sorting


def test_sort(db):
    assert db.ids("Patient", "_sort=family") == ["p3", "p2", "p1"]
    assert db.ids("Patient", "_sort=-family") == ["p1", "p2", "p3"]
    # missing values sort last either way
    assert db.ids("Patient", "_sort=birthdate") == ["p1", "p2", "p3"]
    assert db.ids("Patient", "_sort=-birthdate") == ["p2", "p1", "p3"]
    assert db.ids("Observation", "_sort=patient,-_id") == ["o2", "o1", "o3", "o4"]
    assert db.ids("Observation", "_sort=-_lastUpdated,_id") == ["o1", "o2", "o3", "o4"]
    with pytest.raises(FhirError):
        db.ids("Patient", "_sort=nope")


# ------------------------------------------------------------------ paging


def _link(b, rel):
    for x in b["link"]:
        if x["relation"] == rel:
            return x["url"]
    return None


def _params(url):
    parts = urlsplit(url)
    assert url.startswith(BASE)
    return parse_qsl(parts.query, keep_blank_values=True)


def _walk(db, rtype, query, rel="next"):
    b = db.bundle(rtype, query)
    pages = [b]
    while _link(b, rel):
        b = db.bundle(rtype, _params(_link(b, rel)))
        pages.append(b)
    return pages


@pytest.mark.parametrize("sort", ["", "_sort=name", "_sort=-name", "_sort=-birthdate,_id", "_sort=_lastUpdated", "_sort=birthdate,-name"])
def test_paging_complete_no_trailing_empty_page(db, sort):
    for i in range(23):
        db.put({"resourceType": "Person", "id": f"pp{i:02d}", "name": [{"family": f"N{i % 5}"}],
                "birthDate": f"{1950 + i % 7}-01-01" if i % 3 else None}, last_updated=f"2024-01-{1 + i % 4:02d}")
    pages = _walk(db, "Person", f"_count=5&{sort}")
    ids = [e["resource"]["id"] for p in pages for e in p.get("entry", [])]
    assert len(ids) == 23 and len(set(ids)) == 23
    assert [len(p["entry"]) for p in pages] == [5, 5, 5, 5, 3]
    assert pages[0]["total"] == 23  # later pages skip the COUNT unless _total=accurate
    assert all("total" not in p for p in pages[1:])
    accurate = _walk(db, "Person", f"_count=5&_total=accurate&{sort}")
    assert all(p["total"] == 23 for p in accurate)
    # and backwards from the last page gives the same pages
    back = [pages[-1]]
    while _link(back[-1], "previous"):
        back.append(db.bundle("Person", _params(_link(back[-1], "previous"))))
    assert [[e["resource"]["id"] for e in p["entry"]] for p in reversed(back)] == \
           [[e["resource"]["id"] for e in p["entry"]] for p in pages]
    assert _link(pages[0], "previous") is None and _link(pages[-1], "next") is None


def test_paging_exact_multiple(db):
    for i in range(10):
        db.put({"resourceType": "Device", "id": f"d{i}"})
    pages = _walk(db, "Device", "_count=5")
    assert [len(p["entry"]) for p in pages] == [5, 5]


def test_paging_stable_under_inserts(db):
    for i in range(10):
        db.put({"resourceType": "Substance", "id": f"s{i:02d}", "code": {"coding": [{"code": f"t{i:02d}"}]}})
    b1 = db.bundle("Substance", "_count=4&_sort=code")
    first = [e["resource"]["id"] for e in b1["entry"]]
    # insert rows before and after the cursor position
    db.put({"resourceType": "Substance", "id": "s00a", "code": {"coding": [{"code": "t00a"}]}})
    db.put({"resourceType": "Substance", "id": "s99", "code": {"coding": [{"code": "t99"}]}})
    rest = []
    b = b1
    while _link(b, "next"):
        b = db.bundle("Substance", _params(_link(b, "next")))
        rest += [e["resource"]["id"] for e in b["entry"]]
    assert not set(first) & set(rest)
    assert rest == [f"s{i:02d}" for i in range(4, 10)] + ["s99"]


def test_paging_uses_sort_keys_not_offset(db):
    b = db.bundle("Patient", "_count=1&_sort=family")
    assert _link(b, "next")
    cursor = dict(_params(_link(b, "next")))["_cursor"]
    with pytest.raises(FhirError):  # cursor from another sort order is rejected
        db.bundle("Patient", [("_sort", "-family"), ("_cursor", cursor)])
    with pytest.raises(FhirError):
        db.bundle("Patient", [("_cursor", "garbage!!")])


def test_count_and_total(db):
    b = db.bundle("Patient", "_count=2")
    assert len(b["entry"]) == 2 and b["total"] == 3 and _link(b, "next")
    b = db.bundle("Patient", "_total=none&_count=2")
    assert "total" not in b
    b = db.bundle("Patient", "_summary=count")
    assert b["total"] == 3 and "entry" not in b
    b = db.bundle("Patient", "_count=0")
    assert b["total"] == 3 and "entry" not in b
    with pytest.raises(FhirError):
        db.bundle("Patient", "_count=abc")
    with pytest.raises(FhirError):
        db.bundle("Patient", "_total=maybe")


def test_links_absolute(db):
    b = db.bundle("Patient", "family=smith&_count=1")
    assert _link(b, "self") == f"{BASE}/Patient?family=smith&_count=1"
    assert b["entry"][0]["fullUrl"] == f"{BASE}/Patient/p1"
    assert b["type"] == "searchset"


# ------------------------------------------------------------------ projection


def test_summary_and_elements(db):
    b = db.bundle("Patient", "_id=p1&_elements=name")
    res = b["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "name"}
    assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])
    b = db.bundle("Patient", "_id=p1&_summary=true")
    res = b["entry"][0]["resource"]
    assert "name" in res and "birthDate" in res and "generalPractitioner" not in res
    b = db.bundle("Patient", "_id=p1&_summary=data")
    assert "generalPractitioner" in b["entry"][0]["resource"]
    with pytest.raises(FhirError):
        db.bundle("Patient", "_summary=bogus")


# ------------------------------------------------------------------ compartment / system


def test_compartment(db):
    assert db.set_ids("Observation", "", compartment=("Patient", "p1")) == {"o1", "o2"}
    assert db.set_ids("Observation", "code=8480-6", compartment=("Patient", "p1")) == {"o1"}
    assert db.set_ids("Encounter", "", compartment=("Patient", "p1")) == {"e1"}
    assert db.set_ids("Patient", "", compartment=("Patient", "p1")) == {"p1"}
    assert db.set_ids("Organization", "", compartment=("Patient", "p1")) == set()
    b = db.bundle("Observation", "", compartment=("Patient", "p1"))
    assert _link(b, "self") == f"{BASE}/Patient/p1/Observation"


def test_system_search(db):
    assert db.set_ids(None, "_id=p1,o1") == {"p1", "o1"}
    assert db.set_ids(None, "_type=Organization") == {"org1", "org2"}
    b = db.bundle(None, "_id=p1")
    assert b["entry"][0]["fullUrl"] == f"{BASE}/Patient/p1"
    with pytest.raises(FhirError):
        db.bundle(None, "family=smith")
    with pytest.raises(FhirError):
        db.bundle(None, "_type=Nope")
