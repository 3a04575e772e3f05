"""A patient token's compartment condition is left out of a search that already confines its
matches to that compartment (search.access.implied_by_search): the answers must be exactly
those of the search with the condition in place, for every parameter and value form the rule
accepts and for the ones it must refuse (an untyped id that also names a Group)."""

from __future__ import annotations

import random

import pytest

from fhir_server.search import access, engine
from fhir_server.search.access import _implying_params, implied_by_search
from fhir_server.security.authz import Criteria

from .conftest import BASE

_TARGETS = ["Patient/p1", "Patient/p2", "Group/p1", "Practitioner/p1", "RelatedPerson/p1", f"{BASE}/Patient/p1",
            "https://other.example/fhir/Patient/p1", "Patient/p1/_history/2", "Device/p1"]
_SHAPES = {
    "Observation": lambda ref: {"status": "final", "code": {"text": "x"}, "subject": ref(), "performer": [ref()]},
    "Encounter": lambda ref: {"status": "finished", "class": {"code": "AMB"}, "subject": ref()},
    "QuestionnaireResponse": lambda ref: {"status": "completed", "subject": ref(), "author": ref()},
    "DocumentReference": lambda ref: {"status": "current", "content": [{"attachment": {"url": "x"}}], "subject": ref(),
                                      "author": [ref()]},
    "Communication": lambda ref: {"status": "completed", "subject": ref(), "sender": ref(), "recipient": [ref()]},
    "Appointment": lambda ref: {"status": "booked", "participant": [{"actor": ref(), "status": "accepted"}]},
    "Claim": lambda ref: {"status": "active", "patient": ref(), "payee": {"type": {"text": "x"}, "party": ref()}},
}
_VIS = [Criteria(compartment=("Patient", "p1"))]


@pytest.fixture(scope="module", autouse=True)
def data(db):
    rnd = random.Random(7)
    for res_type, shape in _SHAPES.items():
        for i in range(40):
            db.put({"resourceType": res_type, "id": f"{res_type[:3].lower()}{i}",
                    **shape(lambda: {"reference": rnd.choice(_TARGETS)})})


def _searches():
    for res_type in _SHAPES:
        for code in _implying_params(res_type):
            for name, value in [(code, "p1"), (code, "Patient/p1"), (f"{code}:Patient", "p1"), (code, f"{BASE}/Patient/p1"),
                                (code, "p1,p2"), (code, "Patient/p2"), (code, "Group/p1")]:
                yield res_type, [(name, value), ("_count", "100")]


def test_left_out_only_where_the_answers_are_the_same(db, monkeypatch):
    elided = 0
    for res_type, params in _searches():
        with_elision = db.set_ids(res_type, params, access=lambda t, p: _VIS)
        if implied_by_search(res_type, _VIS, params):
            elided += 1
        monkeypatch.setattr(engine, "implied_by_search", lambda *a: False)
        kept = db.set_ids(res_type, params, access=lambda t, p: _VIS)
        monkeypatch.undo()
        assert with_elision == kept, (res_type, params)
    assert elided >= 2 * len(_SHAPES)  # the rule did apply: patient=<id>, :Patient


def test_an_untyped_id_on_a_compartment_parameter_keeps_the_condition(db):
    """`subject=p1` also matches `Group/p1`, outside Patient p1's compartment: without the
    condition the answer would differ, so the rule must not apply."""
    open_answer = db.set_ids("Observation", [("subject", "p1"), ("_count", "100")])
    restricted = db.set_ids("Observation", [("subject", "p1"), ("_count", "100")], access=lambda t, p: _VIS)
    assert open_answer - restricted  # some match names Group/p1
    assert not implied_by_search("Observation", _VIS, [("subject", "p1")])
    assert implied_by_search("Observation", _VIS, [("subject:Patient", "p1")])
    assert implied_by_search("Observation", _VIS, [("patient", "p1")])
    # a typed value also matches a reference stored as the absolute URL alone (obs indexed
    # without the server's base known): the compartment does not hold it
    assert not implied_by_search("Observation", _VIS, [("patient", "Patient/p1")])


@pytest.mark.parametrize("vis, params", [
    (None, [("patient", "p1")]),
    ([], [("patient", "p1")]),
    ([Criteria(compartment=("Patient", "p1")), Criteria(compartment=("Patient", "p2"))], [("patient", "p1")]),
    ([Criteria(compartment=("Patient", "p1"), exclude=(("status", "final"),))], [("patient", "p1")]),
    ([Criteria(compartment=("Patient", "p1"), params=(("status", "final"),))], [("patient", "p1")]),
    ([Criteria(compartment=("Patient", "p1"), conditions=("case-consent",))], [("patient", "p1")]),
    (_VIS, [("patient", "p2")]),
    (_VIS, [("patient:missing", "false")]),
    (_VIS, [("patient.name", "p1")]),
    (_VIS, [("patient:identifier", "p1")]),
    (_VIS, [("code", "p1")]),
    (_VIS, [("patient", "p\\,1")]),
])
def test_other_visibilities_and_values_keep_the_condition(vis, params):
    assert not implied_by_search("Observation", vis, params)


def test_the_parameters_that_imply_a_compartment():
    assert _implying_params("Observation") == {"subject": False, "performer": False, "patient": True}
    assert access._implying_params("Claim") == {"patient": False, "payee": False}
