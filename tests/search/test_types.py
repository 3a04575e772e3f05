"""Per-type semantics: string, token, date, number, quantity, uri, reference, composite."""

from __future__ import annotations

import pytest

from fhir_server.errors import FhirError


@pytest.fixture(scope="module", autouse=True)
def data(db):
    db.put({"resourceType": "Patient", "id": "p1", "active": True, "gender": "male", "birthDate": "1980-05-17",
            "name": [{"family": "Müller", "given": ["Hans", "Peter"], "prefix": ["Dr."]}],
            "identifier": [{"system": "http://hospital/mrn", "value": "MRN-1",
                            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "MR"}], "text": "Medical record number"}}],
            "telecom": [{"system": "phone", "value": "555-1234"}, {"system": "email", "value": "hans@example.org"}],
            "address": [{"line": ["Hauptstraße 1"], "city": "Zürich", "postalCode": "8001", "country": "CH"}],
            "meta": {"tag": [{"system": "http://tags", "code": "vip"}], "profile": ["http://example.org/fhir/StructureDefinition/my-patient"],
                     "source": "http://source.example/app"}})
    db.put({"resourceType": "Patient", "id": "p2", "active": False, "gender": "female", "birthDate": "1992",
            "name": [{"family": "Ångström", "given": ["Anna"]}],
            "identifier": [{"system": "http://hospital/mrn", "value": "MRN-2"}]})
    db.put({"resourceType": "Patient", "id": "p3", "gender": "other",
            "name": [{"text": "Łukasz Sørensen", "family": "Sørensen_x%"}]})
    db.put({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "House"}]})
    db.put({"resourceType": "Organization", "id": "org1", "name": "Acme Hospital"})
    db.put({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}],
                     "text": "BP systolic"},
            "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/dr1"}],
            "effectiveDateTime": "2013-01-14T10:00:00+01:00",
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
    db.put({"resourceType": "Observation", "id": "o2", "status": "preliminary",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
            "subject": {"reference": "Patient/p2"},
            "effectivePeriod": {"start": "2013-01-10", "end": "2013-01-20"},
            "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}})
    db.put({"resourceType": "Observation", "id": "o3", "status": "final",
            "code": {"coding": [{"code": "local-1"}], "text": "Ungecodeerd"},
            "subject": {"reference": "http://other.server/fhir/Patient/p1"},
            "effectivePeriod": {"start": "2014-03-01T00:00:00Z"},
            "valueQuantity": {"value": 100, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"}})
    db.put({"resourceType": "Observation", "id": "o4", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": "Patient/p3"}, "effectiveDateTime": "2013",
            "valueQuantity": {"value": 0.1, "system": "http://unitsofmeasure.org", "code": "kg"}})
    db.put({"resourceType": "ValueSet", "id": "vs1", "status": "active", "url": "http://acme.org/fhir/ValueSet/123"})
    db.put({"resourceType": "ValueSet", "id": "vs2", "status": "active", "url": "http://acme.org/fhir/ValueSet/124/x"})
    db.put({"resourceType": "RiskAssessment", "id": "ra1", "status": "final", "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": 0.25}]})
    db.put({"resourceType": "RiskAssessment", "id": "ra2", "status": "final", "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": 100}]})


# ------------------------------------------------------------------ string


def test_string_starts_with_and_accents(db):
    assert db.set_ids("Patient", "family=muller") == {"p1"}
    assert db.set_ids("Patient", "family=MÜL") == {"p1"}
    assert db.set_ids("Patient", "family=angstrom") == {"p2"}
    assert db.set_ids("Patient", "name=sorensen") == {"p3"}
    assert db.set_ids("Patient", "name=lukasz") == {"p3"}
    assert db.set_ids("Patient", "name=hans") == {"p1"}
    assert db.set_ids("Patient", "name=peter") == {"p1"}  # every HumanName part
    assert db.set_ids("Patient", "name=dr") == {"p1"}
    assert db.set_ids("Patient", "family=ller") == set()


def test_string_exact_contains(db):
    assert db.set_ids("Patient", "family:exact=Müller") == {"p1"}
    assert db.set_ids("Patient", "family:exact=muller") == set()
    assert db.set_ids("Patient", "family:contains=LLER") == {"p1"}
    assert db.set_ids("Patient", "family:contains=_x%") == {"p3"}  # LIKE wildcards are literal
    assert db.set_ids("Patient", "family:contains=n_x") == {"p3"}
    assert db.set_ids("Patient", "family:contains=%") == {"p3"}


def test_string_address(db):
    assert db.set_ids("Patient", "address=zurich") == {"p1"}
    assert db.set_ids("Patient", "address=hauptstrasse") == {"p1"}
    assert db.set_ids("Patient", "address-city=zur") == {"p1"}
    assert db.set_ids("Patient", "address-postalcode=8001") == {"p1"}


def test_or_and(db):
    assert db.set_ids("Patient", "family=muller,angstrom") == {"p1", "p2"}
    assert db.set_ids("Patient", "family=muller&given=anna") == set()
    assert db.set_ids("Patient", "name=hans&name=peter") == {"p1"}
    assert db.set_ids("Patient", r"family=a\,b") == set()  # escaped comma is literal


def test_missing(db):
    assert db.set_ids("Patient", "birthdate:missing=true") == {"p3"}
    assert db.set_ids("Patient", "birthdate:missing=false") == {"p1", "p2"}
    assert db.set_ids("Patient", "family:missing=true") == set()
    with pytest.raises(FhirError):
        db.ids("Patient", "family:missing=maybe")


# ------------------------------------------------------------------ token


def test_token_forms(db):
    assert db.set_ids("Observation", "code=8480-6") == {"o1", "o4"}
    assert db.set_ids("Observation", "code=http://loinc.org|8480-6") == {"o1", "o4"}
    assert db.set_ids("Observation", "code=http://other|8480-6") == set()
    assert db.set_ids("Observation", "code=|local-1") == {"o3"}
    assert db.set_ids("Observation", "code=|8480-6") == set()
    assert db.set_ids("Observation", "code=http://loinc.org|") == {"o1", "o2", "o4"}
    assert db.set_ids("Observation", "code=8480-6,29463-7") == {"o1", "o2", "o4"}


def test_token_not_text_oftype(db):
    assert db.set_ids("Observation", "code:not=8480-6") == {"o2", "o3"}
    assert db.set_ids("Observation", "status:not=final") == {"o2"}
    assert db.set_ids("Observation", "code:text=systolic") == {"o1"}
    assert db.set_ids("Observation", "code:text=blood") == {"o1"}
    assert db.set_ids("Observation", "code:text=bp") == {"o1"}  # CodeableConcept.text
    assert db.set_ids("Observation", "code:text=ungecod") == {"o3"}
    assert db.set_ids("Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-1") == {"p1"}
    assert db.set_ids("Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-2") == set()
    assert db.set_ids("Patient", "identifier:text=medical") == {"p1"}


def test_token_identifier_boolean_code_contactpoint(db):
    assert db.set_ids("Patient", "identifier=http://hospital/mrn|MRN-2") == {"p2"}
    assert db.set_ids("Patient", "identifier=MRN-1") == {"p1"}
    assert db.set_ids("Patient", "active=true") == {"p1"}
    assert db.set_ids("Patient", "active=false") == {"p2"}
    assert db.set_ids("Patient", "gender=female,other") == {"p2", "p3"}
    assert db.set_ids("Patient", "phone=555-1234") == {"p1"}
    assert db.set_ids("Patient", "email=hans@example.org") == {"p1"}
    assert db.set_ids("Patient", "telecom=phone|555-1234") == {"p1"}


def test_token_terminology_modifiers_with_unknown_targets(db):
    # :in/:not-in/:above/:below are answered by the terminology (tests/search/test_terminology_modifiers.py);
    # a value set or code that the server does not know is a clear 400
    for mod in ("in", "not-in", "above", "below"):
        with pytest.raises(FhirError) as ei:
            db.ids("Observation", f"code:{mod}=http://vs")
        assert ei.value.status == 400
        assert ei.value.issues[0].expression == [f"code:{mod}"]


def test_meta_params(db):
    assert db.set_ids("Patient", "_tag=http://tags|vip") == {"p1"}
    assert db.set_ids("Patient", "_tag=vip") == {"p1"}
    assert db.set_ids("Patient", "_profile=http://example.org/fhir/StructureDefinition/my-patient") == {"p1"}
    assert db.set_ids("Patient", "_source=http://source.example/app") == {"p1"}
    assert db.set_ids("Patient", "_id=p1,p2") == {"p1", "p2"}
    assert db.set_ids("Patient", "_id:not=p1") == {"p2", "p3"}


# ------------------------------------------------------------------ date


def test_date_precision_and_timezones(db):
    # o1: 2013-01-14T10:00:00+01:00 == 09:00:00Z
    assert db.set_ids("Observation", "date=2013-01-14") >= {"o1"}
    assert "o1" in db.set_ids("Observation", "date=2013-01-14T09:00:00Z")
    assert "o1" in db.set_ids("Observation", "date=2013-01-14T10:00:00%2B01:00")
    assert "o1" in db.set_ids("Observation", "date=2013-01-14T10:00:00 01:00")  # unencoded '+'
    assert "o1" not in db.set_ids("Observation", "date=2013-01-14T10:00:00Z")
    assert "o1" in db.set_ids("Observation", "date=2013-01")
    assert "o1" in db.set_ids("Observation", "date=2013")
    # a Period fully inside the search range matches eq; one partly outside does not
    assert "o2" in db.set_ids("Observation", "date=2013-01")
    assert "o2" not in db.set_ids("Observation", "date=2013-01-14")
    # a year-precision value matches only year (or wider) eq searches
    assert "o4" in db.set_ids("Observation", "date=2013")
    assert "o4" not in db.set_ids("Observation", "date=2013-01")


def test_date_prefixes(db):
    ids = lambda q: db.set_ids("Observation", q)  # noqa: E731
    assert ids("date=gt2013-01-14") == {"o2", "o3", "o4"}  # o2 ends 2013-01-20, o3 open-ended, o4 year
    assert ids("date=lt2013-01-14") == {"o2", "o4"}
    assert ids("date=ge2013-01-14") == {"o1", "o2", "o3", "o4"}
    assert ids("date=le2013-01-14") == {"o1", "o2", "o4"}
    assert ids("date=sa2013-12-31") == {"o3"}
    assert ids("date=eb2014-01-01") == {"o1", "o2", "o4"}
    assert ids("date=ne2013-01-14") == {"o2", "o3", "o4"}
    assert ids("date=gt2099-01-01") == {"o3"}  # open end continues forever
    assert ids("date=ap2013-01-14") >= {"o1"}
    assert ids("date=ge2013-01-01&date=lt2013-02-01") == {"o1", "o2", "o4"}


def test_spec_date_examples(db):
    # http://hl7.org/fhir/R4/search.html#date
    db.put({"resourceType": "Encounter", "id": "e1", "status": "finished",
            "period": {"start": "2013-01-14", "end": "2013-01-14"}})
    db.put({"resourceType": "Encounter", "id": "e2", "status": "finished", "period": {"start": "2013-01-14"}})
    db.put({"resourceType": "Encounter", "id": "e3", "status": "finished", "period": {"end": "2013-01-14"}})
    assert "e1" in db.set_ids("Encounter", "date=2013-01-14")
    assert "e2" not in db.set_ids("Encounter", "date=2013-01-14")  # open end is beyond
    assert "e2" in db.set_ids("Encounter", "date=ge2013-01-14")
    assert "e2" in db.set_ids("Encounter", "date=gt2020-01-01")
    assert "e3" in db.set_ids("Encounter", "date=lt2000-01-01")  # open start
    assert "e3" not in db.set_ids("Encounter", "date=gt2013-01-14")
    assert db.set_ids("Encounter", "date=eq2013-01-14T00:00") == set()  # e1 covers the whole day
    assert "e1" in db.set_ids("Encounter", "date=ge2013-01-14T00:00")


def test_date_invalid(db):
    for bad in ("date=2013-13-01", "date=yesterday", "date=2013-01-14T25:00", "date=xx2013"):
        with pytest.raises(FhirError) as ei:
            db.ids("Observation", bad)
        assert ei.value.status == 400


def test_birthdate(db):
    assert db.set_ids("Patient", "birthdate=1980-05-17") == {"p1"}
    assert db.set_ids("Patient", "birthdate=1992") == {"p2"}
    assert db.set_ids("Patient", "birthdate=1992-06") == set()
    assert db.set_ids("Patient", "birthdate=lt1990") == {"p1"}


def test_last_updated(db):
    db.put({"resourceType": "Basic", "id": "b1", "code": {"text": "x"}}, last_updated="2020-01-01T10:00:00+00:00")
    db.put({"resourceType": "Basic", "id": "b2", "code": {"text": "x"}}, last_updated="2021-06-01T10:00:00+00:00")
    assert db.set_ids("Basic", "_lastUpdated=2020") == {"b1"}
    assert db.set_ids("Basic", "_lastUpdated=gt2020-06") == {"b2"}
    assert db.set_ids("Basic", "_lastUpdated=ge2020-01-01T10:00:00Z") == {"b1", "b2"}
    assert db.set_ids("Basic", "_lastUpdated=lt2020-01-01T10:00:00Z") == set()
    assert db.set_ids("Basic", "_lastUpdated=le2020-01-01T10:00:00Z") == {"b1"}
    assert db.set_ids(None, "_lastUpdated=2021&_type=Basic") == {"b2"}


# ------------------------------------------------------------------ number / quantity


def test_number(db):
    assert db.set_ids("RiskAssessment", "probability=0.25") == {"ra1"}
    assert db.set_ids("RiskAssessment", "probability=0.2") == set()  # [0.15, 0.25)
    assert db.set_ids("RiskAssessment", "probability=0.3") == {"ra1"}  # [0.25, 0.35)
    assert db.set_ids("RiskAssessment", "probability=100") == {"ra2"}
    assert db.set_ids("RiskAssessment", "probability=1e2") == {"ra2"}
    assert db.set_ids("RiskAssessment", "probability=gt0.5") == {"ra2"}
    assert db.set_ids("RiskAssessment", "probability=lt0.5") == {"ra1"}
    assert db.set_ids("RiskAssessment", "probability=ge100") == {"ra2"}
    assert db.set_ids("RiskAssessment", "probability=le0.25") == {"ra1"}
    assert db.set_ids("RiskAssessment", "probability=ne100") == {"ra1"}
    assert db.set_ids("RiskAssessment", "probability=ap95") == {"ra2"}
    with pytest.raises(FhirError):
        db.ids("RiskAssessment", "probability=abc")


def test_quantity(db):
    ids = lambda q: db.set_ids("Observation", q)  # noqa: E731
    assert ids("value-quantity=120") == {"o1"}
    assert ids("value-quantity=120|http://unitsofmeasure.org|mm[Hg]") == {"o1"}
    assert ids("value-quantity=120||mmHg") == {"o1"}  # code or unit when no system
    assert ids("value-quantity=120|http://unitsofmeasure.org|kg") == set()
    assert ids("value-quantity=gt100") == {"o1"}
    assert ids("value-quantity=ge100") == {"o1", "o3"}
    assert ids("value-quantity=lt71") == {"o2", "o4"}
    assert ids("value-quantity=70.5") == {"o2"}
    assert ids("value-quantity=ap70") == {"o2"}
    # UCUM canonical: 100 g == 0.1 kg
    assert ids("value-quantity=0.1|http://unitsofmeasure.org|kg") == {"o3", "o4"}
    assert ids("value-quantity=100|http://unitsofmeasure.org|g") == {"o3", "o4"}
    with pytest.raises(FhirError):
        ids("value-quantity=1|2")


# ------------------------------------------------------------------ uri


def test_uri(db):
    assert db.set_ids("ValueSet", "url=http://acme.org/fhir/ValueSet/123") == {"vs1"}
    assert db.set_ids("ValueSet", "url=http://acme.org/fhir/ValueSet/12") == set()
    assert db.set_ids("ValueSet", "url:below=http://acme.org/fhir/") == {"vs1", "vs2"}
    assert db.set_ids("ValueSet", "url:above=http://acme.org/fhir/ValueSet/123/_history/5") == {"vs1"}


# ------------------------------------------------------------------ reference


def test_reference_forms(db):
    assert db.set_ids("Observation", "subject=Patient/p1") == {"o1"}
    assert db.set_ids("Observation", "subject=p1") == {"o1"}
    assert db.set_ids("Observation", "subject:Patient=p1") == {"o1"}
    assert db.set_ids("Observation", "subject=http://test.local/fhir/Patient/p1") == {"o1"}
    assert db.set_ids("Observation", "subject=http://other.server/fhir/Patient/p1") == {"o3"}
    assert db.set_ids("Observation", "patient=Patient/p2") == {"o2"}
    assert db.set_ids("Observation", "performer=Practitioner/dr1") == {"o1"}
    assert db.set_ids("Observation", "subject=Patient/p1,Patient/p2") == {"o1", "o2"}
    assert db.set_ids("Observation", "performer:missing=true") == {"o2", "o3", "o4"}
    with pytest.raises(FhirError):
        db.ids("Observation", "subject:Medication=x")


def test_reference_identifier(db):
    db.put({"resourceType": "Observation", "id": "oid", "status": "final", "code": {"text": "x"},
            "subject": {"identifier": {"system": "urn:ssn", "value": "123"}}})
    assert db.set_ids("Observation", "subject:identifier=urn:ssn|123") == {"oid"}
    assert db.set_ids("Observation", "subject:identifier=123") == {"oid"}
    assert db.set_ids("Observation", "subject:identifier=urn:other|123") == set()
    db.remove("Observation", "oid")


# ------------------------------------------------------------------ composite


def test_composite(db):
    ids = lambda q: db.set_ids("Observation", q)  # noqa: E731
    assert ids("code-value-quantity=http://loinc.org|8480-6$gt100") == {"o1"}
    assert ids("code-value-quantity=http://loinc.org|8480-6$lt100") == {"o4"}
    assert ids("code-value-quantity=8480-6$120") == {"o1"}
    assert ids("code-value-quantity=29463-7$120") == set()  # values from different groups never mix
    assert ids("code-value-quantity=29463-7$70.5,8480-6$120") == {"o1", "o2"}
    with pytest.raises(FhirError):
        ids("code-value-quantity=8480-6")


def test_combo_components(db):
    db.put({"resourceType": "Observation", "id": "bp", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 140, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 90, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]})
    ids = lambda q: db.set_ids("Observation", q)  # noqa: E731
    assert ids("component-code-value-quantity=http://loinc.org|8480-6$gt130") == {"bp"}
    assert ids("component-code-value-quantity=http://loinc.org|8462-4$gt130") == set()
    assert ids("combo-code-value-quantity=8462-4$90") == {"bp"}
    assert ids("component-code=8462-4") == {"bp"}
    db.remove("Observation", "bp")


# ------------------------------------------------------------------ errors


def test_unknown_parameter(db):
    with pytest.raises(FhirError) as ei:
        db.ids("Patient", "foo=bar")
    assert ei.value.status == 400 and "foo" in ei.value.issues[0].diagnostics
    with pytest.raises(FhirError) as ei:
        db.ids("Patient", "family:fuzzy=x")
    assert ei.value.status == 400


def test_lenient(db):
    b = db.bundle("Patient", "foo=bar&family=muller", lenient=True)
    assert [e["resource"]["id"] for e in b["entry"] if e["search"]["mode"] == "match"] == ["p1"]
    outcome = [e for e in b["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "foo" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    self_link = [x["url"] for x in b["link"] if x["relation"] == "self"][0]
    assert "foo" not in self_link and "family=muller" in self_link
    with pytest.raises(FhirError):  # a bad value is still an error
        db.bundle("Patient", "birthdate=notadate", lenient=True)


def test_find_matches(db):
    assert db.matches("Patient", [("identifier", "http://hospital/mrn|MRN-1")]) == [(db.matches("Patient", [("_id", "p1")])[0][0], "p1")]
    assert len(db.matches("Patient", [("identifier", "http://hospital/mrn|")], limit=5)) == 2
    with pytest.raises(FhirError):
        db.matches("Patient", [("nope", "1")])


def test_deleted_not_found(db):
    db.put({"resourceType": "Patient", "id": "gone", "name": [{"family": "Vanish"}]})
    assert db.set_ids("Patient", "family=vanish") == {"gone"}
    db.remove("Patient", "gone")
    assert db.set_ids("Patient", "family=vanish") == set()
    assert db.set_ids("Patient", "_id=gone") == set()


def test_update_reindexes(db):
    db.put({"resourceType": "Patient", "id": "upd", "name": [{"family": "Before"}]})
    db.put({"resourceType": "Patient", "id": "upd", "name": [{"family": "After"}]})
    assert db.set_ids("Patient", "family=before") == set()
    assert db.set_ids("Patient", "family=after") == {"upd"}
    db.remove("Patient", "upd")
