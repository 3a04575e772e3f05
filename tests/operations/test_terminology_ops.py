"""Terminology served and its operations over HTTP: $lookup, $subsumes, $validate-code, $expand, $translate."""

from __future__ import annotations

import pytest

H = {"Content-Type": "application/fhir+json"}
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER_CS = "http://hl7.org/fhir/administrative-gender"
ROLE_CS = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def _params(r) -> dict:
    assert r.status_code == 200, r.text
    out: dict = {}
    for p in r.json()["parameter"]:
        out.setdefault(p["name"], []).append(p)
    return out


def _value(p: dict):
    return next(v for k, v in p.items() if k.startswith("value"))


# ---------------------------------------------------------------- served and searchable


@pytest.mark.parametrize("res_type,url", [
    ("CodeSystem", V2_0203),
    ("CodeSystem", ROLE_CS),
    ("CodeSystem", "http://terminology.hl7.org/CodeSystem/v3-ActCode"),
    ("ValueSet", GENDER_VS),
    ("ValueSet", "http://hl7.org/fhir/ValueSet/c80-practice-codes"),  # practice setting / specialty (SNOMED CT)
    ("CodeSystem", "http://terminology.hl7.org/CodeSystem/service-type"),
    ("ConceptMap", "http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v2"),
])
def test_shipped_terminology_is_searchable_by_url(client, res_type, url):
    bundle = client.get(f"/fhir/{res_type}", params={"url": url}).json()
    assert bundle["total"] == 1, url
    rid = bundle["entry"][0]["resource"]["id"]
    assert client.get(f"/fhir/{res_type}/{rid}").json()["url"] == url


def test_client_code_system_is_used_by_the_operations(client):
    cs = {"resourceType": "CodeSystem", "url": "http://example.org/cs/clinic-specialty", "status": "active",
          "content": "complete", "concept": [{"code": "card", "display": "Cardiology", "concept": [
              {"code": "ped-card", "display": "Paediatric cardiology"}]}, {"code": "derm", "display": "Dermatology"}]}
    assert client.post("/fhir/CodeSystem", json=cs, headers=H).status_code == 201
    p = _params(client.get("/fhir/CodeSystem/$lookup", params={"system": cs["url"], "code": "ped-card"}))
    assert _value(p["display"][0]) == "Paediatric cardiology"
    p = _params(client.get("/fhir/CodeSystem/$subsumes", params={"system": cs["url"], "codeA": "card", "codeB": "ped-card"}))
    assert _value(p["outcome"][0]) == "subsumes"


# ---------------------------------------------------------------- $lookup


def test_lookup_v2_identifier_type(client):
    p = _params(client.get("/fhir/CodeSystem/$lookup", params={"system": V2_0203, "code": "MR"}))
    assert _value(p["display"][0]) == "Medical record number"


def test_lookup_with_post_coding_and_hierarchy_properties(client):
    body = {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"system": ROLE_CS, "code": "MTH"}}]}
    p = _params(client.post("/fhir/CodeSystem/$lookup", json=body, headers=H))
    assert _value(p["display"][0]) == "mother"
    props = {(x["part"][0]["valueCode"], str(_value(x["part"][1]))) for x in p["property"]}
    assert ("parent", "PRN") in props


@pytest.mark.parametrize("params,status", [
    ({"system": V2_0203, "code": "NOPE"}, 404),
    ({"system": "http://example.org/unknown", "code": "x"}, 404),
    ({"system": V2_0203}, 400),
    ({"code": "MR"}, 400),
])
def test_lookup_errors(client, params, status):
    r = client.get("/fhir/CodeSystem/$lookup", params=params)
    assert r.status_code == status and r.json()["resourceType"] == "OperationOutcome"


# ---------------------------------------------------------------- $subsumes


@pytest.mark.parametrize("a,b,outcome", [
    ("PRN", "MTH", "subsumes"),
    ("MTH", "PRN", "subsumed-by"),
    ("MTH", "MTH", "equivalent"),
    ("MTH", "FTH", "not-subsumed"),
])
def test_subsumes_role_code(client, a, b, outcome):
    p = _params(client.get("/fhir/CodeSystem/$subsumes", params={"system": ROLE_CS, "codeA": a, "codeB": b}))
    assert _value(p["outcome"][0]) == outcome


def test_subsumes_unknown_code_is_404(client):
    assert client.get("/fhir/CodeSystem/$subsumes", params={"system": ROLE_CS, "codeA": "MTH", "codeB": "ZZZ"}).status_code == 404


# ---------------------------------------------------------------- $validate-code


@pytest.mark.parametrize("params,result", [
    ({"url": GENDER_VS, "code": "female", "system": GENDER_CS}, True),
    ({"url": GENDER_VS, "code": "female"}, True),
    ({"url": GENDER_VS, "code": "robot", "system": GENDER_CS}, False),
    ({"url": GENDER_VS, "code": "female", "system": "http://example.org"}, False),
])
def test_validate_code_get(client, params, result):
    p = _params(client.get("/fhir/ValueSet/$validate-code", params=params))
    assert _value(p["result"][0]) is result
    if not result:
        assert "message" in p


def test_validate_code_codeable_concept_and_display(client):
    cc = {"coding": [{"system": "http://example.org", "code": "x"}, {"system": GENDER_CS, "code": "male", "display": "Man"}]}
    body = {"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": GENDER_VS},
                                                         {"name": "codeableConcept", "valueCodeableConcept": cc}]}
    p = _params(client.post("/fhir/ValueSet/$validate-code", json=body, headers=H))
    assert _value(p["result"][0]) is True
    assert _value(p["display"][0]) == "Male"
    assert "Man" in _value(p["message"][0])


def test_validate_code_on_instance_and_code_system(client):
    vs_id = client.get("/fhir/ValueSet", params={"url": GENDER_VS}).json()["entry"][0]["resource"]["id"]
    p = _params(client.get(f"/fhir/ValueSet/{vs_id}/$validate-code", params={"code": "other", "system": GENDER_CS}))
    assert _value(p["result"][0]) is True
    p = _params(client.get("/fhir/CodeSystem/$validate-code", params={"url": V2_0203, "code": "MR"}))
    assert _value(p["result"][0]) is True


def test_validate_code_unknown_value_set_is_404(client):
    assert client.get("/fhir/ValueSet/$validate-code", params={"url": "http://example.org/vs/none", "code": "x"}).status_code == 404


# ---------------------------------------------------------------- $expand


def _expansion(r) -> dict:
    assert r.status_code == 200, r.text
    return r.json()["expansion"]


def test_expand_by_url(client):
    e = _expansion(client.get("/fhir/ValueSet/$expand", params={"url": GENDER_VS}))
    assert e["total"] == 4
    assert {c["code"] for c in e["contains"]} == {"male", "female", "other", "unknown"}


def test_expand_filter_offset_count(client):
    url = "http://terminology.hl7.org/ValueSet/v2-0203"
    full = _expansion(client.get("/fhir/ValueSet/$expand", params={"url": url}))
    page = _expansion(client.get("/fhir/ValueSet/$expand", params={"url": url, "offset": 5, "count": 10}))
    assert page["total"] == full["total"] and page["offset"] == 5
    assert [c["code"] for c in page["contains"]] == [c["code"] for c in full["contains"][5:15]]
    f = _expansion(client.get("/fhir/ValueSet/$expand", params={"url": url, "filter": "medical record"}))
    assert "MR" in {c["code"] for c in f["contains"]}
    assert all("medical" in c["display"].lower() for c in f["contains"])


def test_expand_posted_value_set_with_is_a_and_designations(client):
    cs = {"resourceType": "CodeSystem", "url": "http://example.org/cs/lang", "status": "active", "content": "complete",
          "concept": [{"code": "a", "display": "Alpha", "designation": [{"language": "sv", "value": "Alfa"}],
                       "concept": [{"code": "a1", "display": "Alpha one"}]}, {"code": "b", "display": "Beta"}]}
    client.post("/fhir/CodeSystem", json=cs, headers=H)
    vs = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [
        {"system": cs["url"], "filter": [{"property": "concept", "op": "is-a", "value": "a"}]}]}}
    body = {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": vs},
                                                         {"name": "displayLanguage", "valueCode": "sv"},
                                                         {"name": "includeDesignations", "valueBoolean": True}]}
    e = _expansion(client.post("/fhir/ValueSet/$expand", json=body, headers=H))
    by_code = {c["code"]: c for c in e["contains"]}
    assert set(by_code) == {"a", "a1"}
    assert by_code["a"]["display"] == "Alfa" and by_code["a"]["designation"][0]["value"] == "Alfa"


@pytest.mark.parametrize("params,status", [
    ({"url": "http://example.org/vs/none"}, 404),
    ({}, 400),
    ({"url": GENDER_VS, "count": "many"}, 400),
    ({"url": GENDER_VS, "offset": "-1"}, 400),
    ({"url": "http://hl7.org/fhir/ValueSet/mimetypes"}, 404),  # BCP-13: not an enumerable system here
])
def test_expand_errors(client, params, status):
    r = client.get("/fhir/ValueSet/$expand", params=params)
    assert r.status_code == status and r.json()["resourceType"] == "OperationOutcome"


# ---------------------------------------------------------------- $translate


def test_translate_gender_to_v2(client):
    p = _params(client.get("/fhir/ConceptMap/$translate", params={
        "url": "http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v2", "system": GENDER_CS, "code": "male"}))
    assert _value(p["result"][0]) is True
    match = {x["name"]: _value(x) for x in p["match"][0]["part"]}
    assert match["equivalence"] == "equal" and match["concept"]["code"] == "M"


def test_translate_by_source_target_and_reverse(client):
    cm = {"resourceType": "ConceptMap", "url": "http://example.org/cm/spec", "status": "active",
          "sourceUri": "http://example.org/vs/a", "targetUri": "http://example.org/vs/b",
          "group": [{"source": "http://example.org/a", "target": "http://example.org/b",
                     "element": [{"code": "1", "target": [{"code": "one", "equivalence": "equivalent"}]}]}]}
    assert client.post("/fhir/ConceptMap", json=cm, headers=H).status_code == 201
    p = _params(client.get("/fhir/ConceptMap/$translate", params={"source": "http://example.org/vs/a",
                                                                   "system": "http://example.org/a", "code": "1"}))
    assert _value(p["result"][0]) is True
    p = _params(client.get("/fhir/ConceptMap/$translate", params={"url": cm["url"], "system": "http://example.org/b",
                                                                   "code": "one", "reverse": "true"}))
    assert {x["name"]: _value(x) for x in p["match"][0]["part"]}["concept"]["code"] == "1"
    p = _params(client.get("/fhir/ConceptMap/$translate", params={"url": cm["url"], "system": "http://example.org/a", "code": "2"}))
    assert _value(p["result"][0]) is False


def test_translate_needs_a_code(client):
    assert client.get("/fhir/ConceptMap/$translate", params={"url": "http://example.org/cm/spec"}).status_code == 400


# ---------------------------------------------------------------- mission data


def test_national_identifier_types_value_set(client):
    from fhir_server.identifiers.registry import all_schemes

    e = _expansion(client.get("/fhir/ValueSet/$expand", params={
        "url": "http://fhir-server.example.org/fhir/ValueSet/national-identifier-types"}))
    codes = {c["code"] for c in e["contains"]}
    assert codes == {s.type_code for s in all_schemes()}
    assert {"NNSWE", "NNPOL", "NNDNK", "NNNOR", "NNFIN"} <= codes


def test_practice_setting_specialties_for_booking_searches(client):
    """R4's practice-setting codes (SNOMED CT) are PractitionerRole.specialty's binding: expandable and usable in :in."""
    vs = "http://hl7.org/fhir/ValueSet/c80-practice-codes"
    e = _expansion(client.get("/fhir/ValueSet/$expand", params={"url": vs, "filter": "cardiology"}))
    assert any(c["code"] == "394579002" for c in e["contains"])  # Cardiology
    role = {"resourceType": "PractitionerRole", "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394579002"}]}]}
    rid = client.post("/fhir/PractitionerRole", json=role, headers=H).json()["id"]
    found = client.get("/fhir/PractitionerRole", params={"specialty:in": vs, "_id": rid}).json()
    assert [x["resource"]["id"] for x in found.get("entry", [])] == [rid]


@pytest.mark.parametrize("path,params", [
    ("/fhir/ValueSet/$expand", [{"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active",
                                                                   "compose": {"include": {"system": "x"}}}}]),
    ("/fhir/ValueSet/$expand", [{"name": "valueSet", "resource": {"resourceType": "Patient"}}]),
    ("/fhir/ValueSet/$validate-code", [{"name": "url", "valueUri": GENDER_VS},
                                       {"name": "coding", "valueCoding": {"system": GENDER_CS, "code": "male", "id": "x"}},
                                       {"name": "codeableConcept", "valueCodeableConcept": {"coding": [{"system": 1}]}}]),
    ("/fhir/ConceptMap/$translate", [{"name": "conceptMap", "resource": {"resourceType": "ConceptMap", "group": "x"}},
                                     {"name": "code", "valueCode": "a"}]),
    ("/fhir/CodeSystem/$lookup", [{"name": "coding", "valueString": "x", "valueCode": "y"}]),
])
def test_malformed_operation_inputs_are_400(client, path, params):
    r = client.post(path, json={"resourceType": "Parameters", "parameter": params}, headers=H)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_search_in_too_large_a_value_set_is_400(client, monkeypatch):
    from fhir_server.terminology import search

    monkeypatch.setattr(search, "MAX_CODES", 3)
    r = client.get("/fhir/Patient", params={"gender:in": GENDER_VS})
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "too-costly"
