"""The expansion engine, table-driven over compose shapes (R4 valueset.html#compose)."""

from __future__ import annotations

import pytest

from fhir_server.terminology.codesystem import CodeSystemIndex
from fhir_server.terminology.expand import TerminologyError, expand
from fhir_server.terminology.package import PackageResolver

SYS = "http://example.org/cs/body"
CS = {
    "resourceType": "CodeSystem", "url": SYS, "version": "1", "status": "active", "content": "complete",
    "hierarchyMeaning": "is-a",
    "property": [{"code": "kind", "type": "code"}, {"code": "status", "type": "code"}],
    "concept": [
        {"code": "limb", "display": "Limb", "concept": [
            {"code": "arm", "display": "Arm", "property": [{"code": "kind", "valueCode": "upper"}], "concept": [
                {"code": "hand", "display": "Hand", "property": [{"code": "kind", "valueCode": "upper"}]}]},
            {"code": "leg", "display": "Leg", "property": [{"code": "kind", "valueCode": "lower"}]}]},
        {"code": "head", "display": "Head", "designation": [{"language": "sv", "value": "Huvud"}]},
        {"code": "tail", "display": "Tail", "property": [{"code": "status", "valueCode": "retired"}]},
        {"code": "foot", "display": "Foot", "property": [{"code": "parent", "valueCode": "leg"}]},
    ],
}
OTHER = {"resourceType": "CodeSystem", "url": "http://example.org/cs/other", "status": "active",
         "content": "not-present"}
BASE_VS = {"resourceType": "ValueSet", "url": "http://example.org/vs/limbs", "status": "active",
           "compose": {"include": [{"system": SYS, "filter": [{"property": "concept", "op": "is-a", "value": "limb"}]}]}}


def _resolver(*extra):
    return PackageResolver(iter([CS, OTHER, BASE_VS, *extra]))


def _codes(compose, *extra):
    vs = {"resourceType": "ValueSet", "status": "active", "compose": compose}
    return sorted(e.code for e in expand(vs, _resolver(*extra)))


@pytest.mark.parametrize("compose,expected", [
    ({"include": [{"system": SYS}]}, ["arm", "foot", "hand", "head", "leg", "limb", "tail"]),
    ({"include": [{"system": SYS, "concept": [{"code": "arm"}, {"code": "head"}, {"code": "nope"}]}]}, ["arm", "head"]),
    ({"include": [{"system": SYS, "filter": [{"property": "concept", "op": "is-a", "value": "leg"}]}]}, ["foot", "leg"]),
    ({"include": [{"system": SYS, "filter": [{"property": "concept", "op": "descendent-of", "value": "limb"}]}]},
     ["arm", "foot", "hand", "leg"]),
    ({"include": [{"system": SYS, "filter": [{"property": "concept", "op": "is-not-a", "value": "limb"}]}]},
     ["head", "tail"]),
    ({"include": [{"system": SYS, "filter": [{"property": "kind", "op": "=", "value": "upper"}]}]}, ["arm", "hand"]),
    ({"include": [{"system": SYS, "filter": [{"property": "concept", "op": "is-a", "value": "limb"},
                                             {"property": "kind", "op": "=", "value": "upper"}]}]}, ["arm", "hand"]),
    ({"include": [{"system": SYS, "filter": [{"property": "code", "op": "regex", "value": "h.*"}]}]}, ["hand", "head"]),
    ({"include": [{"system": SYS}], "exclude": [{"system": SYS, "filter": [{"property": "concept", "op": "is-a", "value": "arm"}]}]},
     ["foot", "head", "leg", "limb", "tail"]),
    ({"include": [{"valueSet": ["http://example.org/vs/limbs"]}]}, ["arm", "foot", "hand", "leg", "limb"]),
    ({"include": [{"system": SYS, "valueSet": ["http://example.org/vs/limbs"], "filter": [{"property": "kind", "op": "=", "value": "lower"}]}]},
     ["leg"]),
    ({"include": [{"system": SYS}], "inactive": False}, ["arm", "foot", "hand", "head", "leg", "limb"]),
    ({"include": [{"system": "http://example.org/cs/other", "concept": [{"code": "x", "display": "X"}]}]}, ["x"]),
])
def test_compose(compose, expected):
    assert _codes(compose) == expected


@pytest.mark.parametrize("compose,code", [
    ({"include": [{"system": "http://example.org/cs/unknown"}]}, "not-found"),
    ({"include": [{"system": "http://example.org/cs/other"}]}, "too-costly"),
    ({"include": [{"valueSet": ["http://example.org/vs/unknown"]}]}, "not-found"),
    ({"include": [{"system": SYS, "filter": [{"property": "concept", "op": "sounds-like", "value": "x"}]}]}, "not-supported"),
])
def test_compose_failures(compose, code):
    with pytest.raises(TerminologyError) as exc:
        _codes(compose)
    assert exc.value.code == code


def test_self_import_is_refused():
    loop = {"resourceType": "ValueSet", "url": "http://example.org/vs/loop", "status": "active",
            "compose": {"include": [{"valueSet": ["http://example.org/vs/loop"]}]}}
    with pytest.raises(TerminologyError):
        expand(loop, _resolver(loop))


def test_subsumption_follows_nesting_and_parent_properties():
    cs = CodeSystemIndex(CS)
    assert cs.subsumes("limb", "hand") == "subsumes"
    assert cs.subsumes("hand", "limb") == "subsumed-by"
    assert cs.subsumes("leg", "foot") == "subsumes"  # via the parent property
    assert cs.subsumes("arm", "leg") == "not-subsumed"
    assert cs.subsumes("arm", "arm") == "equivalent"


def test_shipped_v3_hierarchy():
    from fhir_server.terminology.package import package_resolver

    role = package_resolver().code_system("http://terminology.hl7.org/CodeSystem/v3-RoleCode")
    assert role is not None and role.get("MTH") is not None
    assert "MTH" in set(role.descendants("_PersonalRelationshipRoleType"))
