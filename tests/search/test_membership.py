"""search.membership.patients_of (the fast read path's and the access log's compartment test)
reads relative references directly; it must answer exactly what running the indexer's reference
converter over every compartment parameter answers (the rule the database's criteria apply)."""

from __future__ import annotations

import random

from fhir_server.search.membership import _compartment_entries, patients_of

_REFS = [
    "Patient/p1", "Patient/p2", "Patient/p1/_history/3", "Group/g1", "Practitioner/9", "RelatedPerson/r1",
    "https://other.example/fhir/Patient/p3", "http://testserver/fhir/Patient/p4", "urn:uuid:5b1f3c", "#contained",
    "Patient", "Patient/", "patient/p5", "Patient/" + "x" * 80, "Patient/p 6", "", "Patient/p1|1.0", "Device/fhir-server",
]


def _reference_answer(res_type: str, resource: dict) -> list[str]:
    """The rule as the indexer states it: every compartment parameter's values through its
    converter, Patient targets in first-seen order (the implementation before the fast path)."""
    found: list[str] = []
    if res_type == "Patient" and isinstance(resource.get("id"), str):
        found.append(resource["id"])
    for _sp, ev, conv in _compartment_entries(res_type):
        try:
            items = ev(resource, resource)
            rows = conv(items) if items else []
        except Exception:  # noqa: BLE001
            continue
        for row in rows:
            target = row.get("target_id")
            if row.get("target_type") == "Patient" and target and target not in found:
                found.append(target)
    return found


def _ref(rnd: random.Random):
    choice = rnd.random()
    if choice < 0.7:
        return {"reference": rnd.choice(_REFS)}
    if choice < 0.8:
        return {"reference": rnd.choice(_REFS), "identifier": {"system": "urn:x", "value": "1"}}
    if choice < 0.9:
        return {"identifier": {"system": "http://electronichealth.se/identifier/personnummer", "value": "191212121212"}}
    return {"type": "Patient", "display": "no reference"}


def test_fast_membership_answers_as_the_converter_does():
    rnd = random.Random(13)
    shapes = {
        "Observation": lambda: {"subject": _ref(rnd), "performer": [_ref(rnd) for _ in range(rnd.randrange(3))]},
        "Encounter": lambda: {"subject": _ref(rnd), "participant": [{"individual": _ref(rnd)}]},
        "DocumentReference": lambda: {"subject": _ref(rnd), "author": [_ref(rnd), _ref(rnd)]},
        "Claim": lambda: {"patient": _ref(rnd), "payee": {"party": _ref(rnd)}},
        "AuditEvent": lambda: {"agent": [{"who": _ref(rnd)} for _ in range(3)], "entity": [{"what": _ref(rnd)}]},
        "Patient": lambda: {"id": "self", "link": [{"other": _ref(rnd)}]},
        "CarePlan": lambda: {"subject": _ref(rnd), "activity": [{"detail": {"performer": [_ref(rnd)]}}]},
        "QuestionnaireResponse": lambda: {"subject": _ref(rnd), "author": _ref(rnd), "source": _ref(rnd)},
    }
    checked = with_patients = 0
    for _ in range(600):
        res_type = rnd.choice(sorted(shapes))
        resource = {"resourceType": res_type, **shapes[res_type]()}
        expected = _reference_answer(res_type, resource)
        assert patients_of(res_type, resource) == expected, resource
        checked += 1
        with_patients += bool(expected)
    assert checked == 600 and with_patients > 200  # the comparison covered resources in compartments


def test_absolute_references_go_through_the_local_base():
    """An absolute reference to this server's own base is local (search.local_base), as for the index."""
    from fhir_server.search import local_base

    resource = {"resourceType": "Observation", "subject": {"reference": "http://testserver/fhir/Patient/p4"}}
    assert patients_of("Observation", resource) == _reference_answer("Observation", resource)
    with local_base.serving("http://testserver/fhir"):
        assert patients_of("Observation", resource) == _reference_answer("Observation", resource) == ["p4"]
