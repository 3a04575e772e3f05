"""Tests for the three PATCH formats, including the official FHIR test-case files.

fhir-patch-tests.xml holds XML resources; lxml (needed by fhir.resources'
model_validate_xml) is not installed, so a small converter below turns FHIR
XML into FHIR JSON using the fhir.resources R4B classes only for cardinality
and primitive JSON types.
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import pytest

from fhir_server.errors import FhirError
from fhir_server.rest.patch import apply_fhirpath_patch, apply_json_patch, apply_merge_patch, apply_patch

DATA = Path("/work/shared/data/fhir-test-cases")
JSON_PATCH_FILE = DATA / "json-patch-tests.json"
FHIR_PATCH_FILE = DATA / "fhir-patch-tests.xml"
XHTML = "http://www.w3.org/1999/xhtml"


# --------------------------------------------------------------------------- helpers


def params(*ops: list[dict]) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": list(op)} for op in ops]}


def op(type_: str, path: str, **parts) -> list[dict]:
    """Build operation parts; value parts are passed as value_<Type>=..., name/index/... as plain kwargs."""
    out = [{"name": "type", "valueCode": type_}, {"name": "path", "valueString": path}]
    for key, val in parts.items():
        if key == "value_parts":
            out.append({"name": "value", "part": val})
        elif key.startswith("value_"):
            out.append({"name": "value", "value" + key[6:]: val})
        elif key in ("index", "source", "destination"):
            out.append({"name": key, "valueInteger": val})
        else:
            out.append({"name": key, "valueString": val})
    return out


def status_of(fn, *args) -> tuple[int, str]:
    with pytest.raises(FhirError) as info:
        fn(*args)
    return info.value.status, info.value.issues[0].code


# --------------------------------------------------------------------------- FHIR XML -> JSON (test data only)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@lru_cache(maxsize=None)
def _xml_fields(type_name: str) -> dict:
    from fhir.resources.R4B import get_fhir_model_class

    cls = get_fhir_model_class(type_name)
    out = {}
    for pyname, f in cls.model_fields.items():
        ann = str(f.annotation)
        marker = None
        for token in ann.replace("[", " ").replace("]", " ").replace("|", " ").replace(",", " ").split():
            if token.startswith("abc.") and token.endswith("Type"):
                marker = token[4:-4]
        if "bool" in ann:
            prim = bool
        elif "[int" in ann:
            prim = int
        elif "Decimal" in ann:
            prim = float
        else:
            prim = str
        out[f.alias or pyname] = ("List[" in ann, marker, prim)
    return out


def xml_resource(el: ET.Element) -> dict:
    rtype = _local(el.tag)
    out = {"resourceType": rtype}
    out.update(_xml_object(el, rtype))
    return out


def _xml_object(el: ET.Element, type_name: str) -> dict:
    fields = _xml_fields(type_name)
    out: dict = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue  # comments
        name = _local(child.tag)
        is_list, marker, prim = fields[name]
        if name == "div":
            div = copy.deepcopy(child)
            div.tail = None
            value = ET.tostring(div, encoding="unicode")
        elif marker in ("Resource", "DomainResource"):
            value = xml_resource(next(c for c in child if isinstance(c.tag, str)))
        elif marker and marker not in ("Element",) and child.get("value") is None:
            value = _xml_object(child, marker)
        else:
            raw = child.get("value")
            value = (raw == "true") if prim is bool else prim(raw) if prim is not str else raw
        if is_list:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def _canon(value):
    """Compare xhtml by canonical form so serializer differences don't matter."""
    if isinstance(value, dict):
        return {k: (_canon_div(v) if k == "div" else _canon(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return value


def _canon_div(text: str) -> str:
    return ET.canonicalize(text, strip_text=True, rewrite_prefixes=True)


def _fhir_patch_cases():
    if not FHIR_PATCH_FILE.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{FHIR_PATCH_FILE} not present"))]
    ET.register_namespace("", XHTML)
    root = ET.parse(FHIR_PATCH_FILE).getroot()
    cases = []
    for case in root.findall("case"):
        def first_child(tag):
            holder = case.find(tag)
            return None if holder is None else next(c for c in holder if isinstance(c.tag, str))

        inp, diff, out = first_child("input"), first_child("diff"), first_child("output")
        err = case.find("error")
        cases.append(
            pytest.param(
                (
                    xml_resource(inp),
                    xml_resource(diff),
                    None if out is None else xml_resource(out),
                    None if err is None else err.get("msg"),
                ),
                id=case.get("name"),
            )
        )
    return cases


def _json_patch_cases():
    if not JSON_PATCH_FILE.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{JSON_PATCH_FILE} not present"))]
    return [pytest.param(c, id=c.get("comment", str(i))) for i, c in enumerate(json.loads(JSON_PATCH_FILE.read_text()))]


# --------------------------------------------------------------------------- official test files


@pytest.mark.parametrize("case", _json_patch_cases())
def test_json_patch_suite(case):
    doc = copy.deepcopy(case["doc"])
    if "error" in case:
        status, code = status_of(apply_json_patch, doc, case["patch"])
        assert (status, code) == (422, "processing"), case["error"]
    else:
        assert apply_json_patch(doc, case["patch"]) == case["expected"]
    assert doc == case["doc"]  # input untouched


@pytest.mark.parametrize("case", _fhir_patch_cases())
def test_fhir_patch_suite(case):
    resource, diff, expected, error = case
    before = copy.deepcopy(resource)
    if error is not None:
        status, code = status_of(apply_fhirpath_patch, resource, diff)
        assert (status, code) == (422, "processing"), error
    else:
        assert _canon(apply_fhirpath_patch(resource, diff)) == _canon(expected)
    assert resource == before


def test_xml_converter_sanity():
    el = ET.fromstring(
        '<Patient xmlns="http://hl7.org/fhir"><active value="true"/><identifier><value value="1"/></identifier>'
        '<multipleBirthInteger value="2"/></Patient>'
    )
    assert xml_resource(el) == {
        "resourceType": "Patient",
        "active": True,
        "identifier": [{"value": "1"}],
        "multipleBirthInteger": 2,
    }


# --------------------------------------------------------------------------- JSON Patch


PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "name": [{"family": "Nowak", "given": ["Jan", "Piotr"]}],
    "identifier": [
        {"system": "urn:oid:2.16.840.1.113883.3.4424.1.1.616", "value": "44051401359", "use": "official"},
        {"system": "http://example.org/mrn", "value": "MRN-1"},
    ],
    "birthDate": "1944-05-14",
}


def test_json_patch_basic_and_no_mutation():
    before = copy.deepcopy(PATIENT)
    out = apply_json_patch(PATIENT, [{"op": "replace", "path": "/active", "value": False},
                                     {"op": "add", "path": "/name/0/given/-", "value": "Maria"}])
    assert out["active"] is False and out["name"][0]["given"] == ["Jan", "Piotr", "Maria"]
    assert PATIENT == before


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"op": "replace", "path": "/active"}, (400, "invalid")),  # no value
        ("not-a-list", (400, "invalid")),
        ([{"op": "frobnicate", "path": "/x"}], (400, "invalid")),
        ([{"op": "remove"}], (400, "invalid")),
        ([{"op": "remove", "path": "/gender"}], (422, "processing")),
        ([{"op": "test", "path": "/birthDate", "value": "2000-01-01"}], (422, "processing")),
    ],
)
def test_json_patch_errors(patch, expected):
    body = [patch] if isinstance(patch, dict) else patch
    assert status_of(apply_json_patch, PATIENT, body) == expected


# --------------------------------------------------------------------------- merge patch


def test_merge_patch_rfc7386():
    out = apply_merge_patch(PATIENT, {"active": None, "gender": "male", "name": [{"family": "Kowalski"}]})
    assert "active" not in out and out["gender"] == "male" and out["name"] == [{"family": "Kowalski"}]
    assert out["id"] == "p1" and out["resourceType"] == "Patient"
    assert PATIENT["active"] is True and PATIENT["name"][0]["family"] == "Nowak"


def test_merge_patch_nested_objects_merge():
    res = {"resourceType": "Observation", "code": {"text": "x", "coding": [{"code": "1"}]}}
    out = apply_merge_patch(res, {"code": {"text": None, "extra": {"a": None, "b": 1}}})
    assert out == {"resourceType": "Observation", "code": {"coding": [{"code": "1"}], "extra": {"b": 1}}}
    out["code"]["coding"].append(1)
    assert res["code"]["coding"] == [{"code": "1"}]  # no shared structure


def test_merge_patch_rejects_non_object():
    assert status_of(apply_merge_patch, PATIENT, ["x"]) == (400, "invalid")


# --------------------------------------------------------------------------- FHIRPath Patch


def test_fhirpath_where_conjunction_replace():
    body = params(op("replace", "Patient.identifier.where(system='http://example.org/mrn' and value='MRN-1').value",
                     value_String="MRN-2"))
    out = apply_fhirpath_patch(PATIENT, body)
    assert out["identifier"][1]["value"] == "MRN-2"
    assert PATIENT["identifier"][1]["value"] == "MRN-1"


def test_fhirpath_first_last_and_indexers():
    out = apply_fhirpath_patch(PATIENT, params(op("replace", "Patient.name.first().given.last()", value_String="P.")))
    assert out["name"][0]["given"] == ["Jan", "P."]
    out = apply_fhirpath_patch(PATIENT, params(op("delete", "Patient.name[0].given[0]")))
    assert out["name"][0]["given"] == ["Piotr"]


def test_fhirpath_choice_type_resolution():
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
           "valueQuantity": {"value": 60, "unit": "/min"}}
    out = apply_fhirpath_patch(obs, params(op("replace", "Observation.value.value", value_Decimal=72)))
    assert out["valueQuantity"] == {"value": 72, "unit": "/min"}
    out = apply_fhirpath_patch(obs, params(op("replace", "Observation.value", value_String="n/a")))
    assert "valueQuantity" not in out and out["valueString"] == "n/a"
    out = apply_fhirpath_patch(obs, params(op("delete", "Observation.value")))
    assert not any(k.startswith("value") for k in out)
    out = apply_fhirpath_patch(out, params(op("add", "Observation", name="value", value_CodeableConcept={"text": "x"})))
    assert out["valueCodeableConcept"] == {"text": "x"}
    assert status_of(apply_fhirpath_patch, out, params(op("add", "Observation", name="value", value_String="y"))) == (
        422, "processing")


def test_fhirpath_add_complex_and_anonymous_with_cardinality():
    out = apply_fhirpath_patch({"resourceType": "Patient"}, params(
        op("add", "Patient", name="identifier", value_Identifier={"system": "s", "value": "1"}),
        op("add", "Patient", name="maritalStatus", value_CodeableConcept={"text": "M"}),
        op("add", "Patient", name="contact", value_parts=[
            {"name": "name", "valueHumanName": {"family": "X"}},
            {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "1"}},
        ]),
    ))
    assert out["identifier"] == [{"system": "s", "value": "1"}]
    assert out["maritalStatus"] == {"text": "M"}
    assert out["contact"] == [{"name": {"family": "X"}, "telecom": [{"system": "phone", "value": "1"}]}]


def test_fhirpath_add_to_existing_single_fails():
    body = params(op("add", "Patient", name="birthDate", value_Date="2000-01-01"))
    assert status_of(apply_fhirpath_patch, PATIENT, body) == (422, "processing")


def test_fhirpath_insert_move_and_errors():
    out = apply_fhirpath_patch(PATIENT, params(op("insert", "Patient.identifier", index=0, value_Identifier={"value": "0"})))
    assert [i["value"] for i in out["identifier"]] == ["0", "44051401359", "MRN-1"]
    out = apply_fhirpath_patch(out, params(op("move", "Patient.identifier", source=0, destination=2)))
    assert [i["value"] for i in out["identifier"]] == ["44051401359", "MRN-1", "0"]
    bad_index = params(op("insert", "Patient.identifier", index=9, value_Identifier={"value": "0"}))
    assert status_of(apply_fhirpath_patch, PATIENT, bad_index) == (422, "processing")
    assert status_of(apply_fhirpath_patch, PATIENT, params(op("move", "Patient.identifier", source=5, destination=0)))[0] == 422
    no_index = params(op("insert", "Patient.identifier", value_Identifier={"value": "0"}))
    assert status_of(apply_fhirpath_patch, PATIENT, no_index) == (400, "invalid")


def test_fhirpath_delete_semantics():
    assert apply_fhirpath_patch(PATIENT, params(op("delete", "Patient.gender"))) == PATIENT  # nothing: no error
    assert status_of(apply_fhirpath_patch, PATIENT, params(op("delete", "Patient.identifier")))[0] == 422  # 2 matches
    out = apply_fhirpath_patch(PATIENT, params(op("delete", "Patient.identifier.where(use='official')")))
    assert [i["value"] for i in out["identifier"]] == ["MRN-1"]
    out = apply_fhirpath_patch({"resourceType": "Patient", "birthDate": "2000", "_birthDate": {"id": "x"}},
                               params(op("delete", "Patient.birthDate")))
    assert out == {"resourceType": "Patient"}


def test_fhirpath_replace_errors():
    assert status_of(apply_fhirpath_patch, PATIENT, params(op("replace", "Patient.gender", value_Code="male")))[0] == 422
    assert status_of(apply_fhirpath_patch, PATIENT, params(op("replace", "Patient.name.given", value_String="x")))[0] == 422


def test_fhirpath_extension_function_and_fallback_criteria():
    res = {"resourceType": "Patient", "extension": [
        {"url": "http://a", "valueString": "1"}, {"url": "http://b", "valueInteger": 5}]}
    out = apply_fhirpath_patch(res, params(op("replace", "Patient.extension('http://b').value", value_Integer=6)))
    assert out["extension"][1] == {"url": "http://b", "valueInteger": 6}
    out = apply_fhirpath_patch(res, params(op("delete", "Patient.extension.where(url.startsWith('http://a'))")))
    assert out["extension"] == [{"url": "http://b", "valueInteger": 5}]


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Bundle"},
        {"resourceType": "Parameters", "parameter": [{"name": "other", "part": []}]},
        params([{"name": "type", "valueCode": "frob"}, {"name": "path", "valueString": "Patient"}]),
        params([{"name": "type", "valueCode": "delete"}]),
        params(op("replace", "Patient.name[", value_String="x")),
        params(op("add", "Patient", value_String="x")),
    ],
)
def test_fhirpath_malformed(body):
    assert status_of(apply_fhirpath_patch, PATIENT, body) == (400, "invalid")


def test_fhirpath_unsupported_function():
    assert status_of(apply_fhirpath_patch, PATIENT, params(op("delete", "Patient.name.resolve()"))) == (
        400, "not-supported")


def test_fhirpath_failure_is_atomic():
    body = params(op("replace", "Patient.active", value_Boolean=False), op("replace", "Patient.gender", value_Code="x"))
    before = copy.deepcopy(PATIENT)
    with pytest.raises(FhirError):
        apply_fhirpath_patch(PATIENT, body)
    assert PATIENT == before


# --------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    "content_type,body,check",
    [
        ("application/json-patch+json", [{"op": "replace", "path": "/active", "value": False}], lambda r: r["active"] is False),
        ("application/json", [{"op": "replace", "path": "/active", "value": False}], lambda r: r["active"] is False),
        ("application/merge-patch+json", {"active": None}, lambda r: "active" not in r),
        ("application/json", {"active": None}, lambda r: "active" not in r),
        ("application/fhir+json; fhirVersion=4.0", {"gender": "male"}, lambda r: r["gender"] == "male"),
        ("application/fhir+json", params(op("replace", "Patient.active", value_Boolean=False)), lambda r: r["active"] is False),
        ("Application/JSON; charset=utf-8", params(op("delete", "Patient.active")), lambda r: "active" not in r),
    ],
)
def test_apply_patch_dispatch(content_type, body, check):
    before = copy.deepcopy(PATIENT)
    assert check(apply_patch(PATIENT, body, content_type))
    assert PATIENT == before


@pytest.mark.parametrize("content_type", ["application/xml", "application/fhir+xml", "text/plain", "", None])
def test_apply_patch_unsupported_media_type(content_type):
    assert status_of(apply_patch, PATIENT, {"active": False}, content_type) == (415, "not-supported")


def test_apply_patch_shape_mismatch():
    assert status_of(apply_patch, PATIENT, {"op": "x"}, "application/json-patch+json") == (400, "invalid")
    assert status_of(apply_patch, PATIENT, "text", "application/json") == (400, "invalid")
