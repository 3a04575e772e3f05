"""SMART scope parsing (v1 and v2 forms, granular) and what each scope lets a token see."""

from __future__ import annotations

import pytest

from fhir_server.security import authz
from fhir_server.security.scopes import narrow, parse_scope, parse_scopes


@pytest.mark.parametrize(
    "text,context,res_type,perms,params",
    [
        ("patient/Observation.read", "patient", "Observation", "rs", ()),
        ("user/*.write", "user", "*", "cud", ()),
        ("system/*.*", "system", "*", "cruds", ()),
        ("patient/Patient.rs", "patient", "Patient", "rs", ()),
        ("system/Encounter.cud", "system", "Encounter", "cud", ()),
        ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", "patient", "Observation", "rs",
         (("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),)),
    ],
)
def test_parse(text, context, res_type, perms, params):
    s = parse_scope(text)
    assert (s.context, s.res_type, s.permissions, s.params) == (context, res_type, frozenset(perms), params)


@pytest.mark.parametrize("text", ["openid", "fhirUser", "launch/patient", "offline_access", "patient/Observation.sr", "patient/Observation.x",
                                  "admin/*.*", "patient/Observation.read?code=1", "patient/Observation.", "patient/.rs", "patient/Observation.rs?"])
def test_not_clinical_or_malformed(text):
    assert parse_scope(text) is None


def test_narrow_to_what_the_client_may_have():
    assert narrow("system/*.rs system/Patient.cruds", "system/*.rs") == "system/*.rs"
    assert narrow("patient/Observation.rs?category=x|y openid", "openid patient/*.rs") == "patient/Observation.rs?category=x|y openid"
    assert narrow("patient/*.cruds", "patient/*.rs") == ""
    assert [s.text for s in parse_scopes("openid patient/*.rs junk system/Patient.r")] == ["patient/*.rs", "system/Patient.r"]


def _p(scopes, patient=None, fhir_user=None):
    return authz.Principal(scopes=frozenset(scopes.split()), patient=patient, fhir_user=fhir_user, authenticated=True)


def test_visibility():
    assert authz.visibility(_p("system/*.rs"), "Observation", "s") is None
    assert authz.visibility(_p("patient/*.rs", patient="p1"), "Observation", "s") == [authz.Criteria(("Patient", "p1"))]
    assert authz.visibility(_p("patient/*.rs"), "Observation", "s") == []  # no patient context
    assert authz.visibility(_p("user/*.rs", fhir_user="Patient/p2"), "Observation", "r") == [authz.Criteria(("Patient", "p2"))]
    assert authz.visibility(_p("user/*.rs", fhir_user="Practitioner/d1"), "Observation", "r") is None
    assert authz.visibility(_p("user/*.rs"), "Observation", "r") == []  # no fhirUser: the user is unknown, nothing (docs/security.md)
    assert authz.visibility(_p("patient/Observation.c", patient="p1"), "Observation", "s") == []
    gran = authz.visibility(_p("system/Observation.rs?status=final"), "Observation", "s")
    assert gran == [authz.Criteria(None, (("status", "final"),))]
    assert authz.visibility(authz.Principal.internal(), "Observation", "s") is None


def test_unauthenticated_principal_is_401_at_the_seam():
    from fhir_server.errors import FhirError

    with pytest.raises(FhirError) as err:
        authz.authorize(authz.ANONYMOUS, authz.AccessRequest("read", "Patient", "x"))
    assert err.value.status == 401
