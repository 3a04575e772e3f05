"""Session 7 adversarial tests, reads: a hostile patient-portal user tries to reach another
patient's data through the two access paths changed in session 7:

1. the fast read (api/fast_read.py): compartment membership from idx_reference rows in the
   read's own statement;
2. the search elision (search/access.py implied_by_search): the compartment condition left
   out when `patient=<own id>` / `<compartment param>:Patient=<own id>` is in the search.

Every request goes over HTTP with real tokens of the server's issuer. A read is made twice:
the plain form (answered in front of the router when it can be) and with `?_pretty=false`
(always through the router); both must give the stated answer.

Found here and fixed on main (these tests were strict xfails before the fixes):
- the fast read served a resource a Consent denies to an acting parent (Criteria.exclude ignored):
  test_denied_resource_hidden_from_the_fast_read_while_acting, test_denied_case_hidden_from_the_fast_read_while_acting
  (main 0362188);
- learned search shapes keyed "coincides with a constant" without naming it (Patient 'subject' then
  'performer' shared a shape, the second got an empty Bundle):
  test_learned_shapes_exact_for_patient_ids_equal_to_shape_constants (main 0362188);
- vread/_history showed a version from before a resource was moved into my compartment:
  test_history_of_a_resource_moved_into_my_compartment (main c07bf76).
"""

from __future__ import annotations

import pytest

from .adversarial_support import (
    _years_ago,
    OWN_BASE,
    _teen_with_one_denied_observation,
    assert_hidden,
    assert_visible,
    both_reads,
    consent,
    date,
    ids,
    new_id,
    obs,
    patient,
    proxy_provision,
    put,
    ref,
    related_person,
    search,
)

# ---------------------------------------------------------------- fast read


def test_fast_read_reference_forms(client, as_patient, pair):
    me, other = pair
    c = as_patient(me)
    hidden = {
        "relative": obs(client, ref(f"Patient/{other}")),
        "absolute own base": obs(client, ref(f"{OWN_BASE}/Patient/{other}")),
        "another server with my id": obs(client, ref(f"https://other.example/fhir/Patient/{me}")),
        "another server with my id, performer": obs(client, performer=[ref(f"https://evil.example/Patient/{me}")]),
        "versioned": obs(client, ref(f"Patient/{other}/_history/1")),
        "contained with my id": obs(client, ref(f"#{me}"), contained=[{"resourceType": "Patient", "id": me}]),
        "contained p": obs(client, ref("#p"), contained=[{"resourceType": "Patient", "id": "p",
                                                           "link": [{"other": ref(f"Patient/{me}"), "type": "seealso"}]}]),
        "identifier only": obs(client, {"identifier": {"system": "urn:x", "value": me}}),
        "display only": obs(client, {"display": f"Patient/{me}"}),
        "Group with my id": obs(client, ref(f"Group/{me}")),
        "Practitioner with my id": obs(client, ref(f"Practitioner/{me}")),
        "urn": obs(client, ref(f"urn:uuid:{me}")),
        "no subject": obs(client),
    }
    for label, oid in hidden.items():
        fast, routed = both_reads(c, f"/fhir/Observation/{oid}")
        assert (fast.status_code, routed.status_code) == (404, 404), (label, fast.status_code, fast.text[:300], routed.status_code)
        assert ("Observation", oid) in c.membership_reads, ("the fast path was not consulted", label)
    # the control: mine, through each of the forms that do name my record
    for target in (f"Patient/{me}", f"{OWN_BASE}/Patient/{me}", f"Patient/{me}/_history/1"):
        assert_visible(c, f"/fhir/Observation/{obs(client, ref(target))}")
    assert_visible(c, f"/fhir/Observation/{obs(client, ref(f'Patient/{other}'), performer=[ref(f'Patient/{me}')])}")


def test_fast_read_after_update_no_longer_referencing_me(client, as_patient, pair):
    me, other = pair
    c = as_patient(me)
    oid = obs(client, ref(f"Patient/{me}"), performer=[ref(f"Patient/{me}")])
    assert_visible(c, f"/fhir/Observation/{oid}")
    obs(client, ref(f"Patient/{other}"), oid=oid)  # version 2: about the other patient only
    assert_hidden(c, f"/fhir/Observation/{oid}")
    # and the same in a search (old index rows must be gone)
    assert oid not in ids(search(c, "/fhir/Observation", {"patient": me}))
    assert oid not in ids(search(c, "/fhir/Observation", {"_id": oid}))


def test_fast_read_deleted_then_recreated(client, as_patient, pair):
    me, other = pair
    c = as_patient(me)
    oid = obs(client, ref(f"Patient/{me}"))
    assert_visible(c, f"/fhir/Observation/{oid}")
    assert client.delete(f"/fhir/Observation/{oid}").status_code in (200, 204)
    fast, routed = both_reads(c, f"/fhir/Observation/{oid}")
    assert fast.status_code == routed.status_code == 410
    obs(client, ref(f"Patient/{other}"), oid=oid)  # re-created about the other patient
    assert_hidden(c, f"/fhir/Observation/{oid}")
    assert oid not in ids(search(c, "/fhir/Observation", {"patient": me}))


def test_fast_read_patient_and_group(client, as_patient, pair):
    me, other = pair
    c = as_patient(me)
    assert_visible(c, f"/fhir/Patient/{me}")
    assert_hidden(c, f"/fhir/Patient/{other}")
    # Patient.link is the Patient type's compartment parameter (R4 CompartmentDefinition/patient):
    # a Patient linking to me is in my compartment; one linking to someone else is not
    third, _ = patient(client, name="Third")
    put(client, {"resourceType": "Patient", "id": other, "link": [{"other": ref(f"Patient/{third}"), "type": "seealso"}]})
    assert_hidden(c, f"/fhir/Patient/{other}")
    put(client, {"resourceType": "Patient", "id": other, "link": [{"other": ref(f"https://x.example/Patient/{me}"), "type": "seealso"}]})
    assert_hidden(c, f"/fhir/Patient/{other}")
    put(client, {"resourceType": "Patient", "id": other, "link": [{"other": ref(f"Patient/{me}"), "type": "seealso"}]})
    assert_visible(c, f"/fhir/Patient/{other}")  # R4: Patient.link to me puts it in my compartment
    put(client, {"resourceType": "Patient", "id": other, "link": [{"other": ref(f"Patient/{third}"), "type": "seealso"}]})
    assert_hidden(c, f"/fhir/Patient/{other}")  # the link removed: the old index row must not keep it visible
    assert other not in ids(search(c, "/fhir/Patient", {"link": me}))
    # a Group whose id is my Patient id, with the other patient as member
    put(client, {"resourceType": "Group", "id": me, "type": "person", "actual": True, "member": [{"entity": ref(f"Patient/{other}")}]})
    assert_hidden(c, f"/fhir/Group/{me}")
    # a Patient whose id is someone else's Group: no confusion of types
    put(client, {"resourceType": "Group", "id": other, "type": "person", "actual": True, "member": [{"entity": ref(f"Group/{me}")}]})
    assert_hidden(c, f"/fhir/Group/{other}")


def test_fast_read_odd_ids(client, as_patient, pair):
    me, other = pair
    c = as_patient(me)
    dotted = new_id("a.b-") + ".x"
    obs(client, ref(f"Patient/{other}"), oid=dotted)
    assert_hidden(c, f"/fhir/Observation/{dotted}")
    long_id = ("z" * 52) + new_id("")[1:13]
    long_id = long_id[:64]
    obs(client, ref(f"Patient/{other}"), oid=long_id)
    assert_hidden(c, f"/fhir/Observation/{long_id}")
    for path in (f"/fhir/Patient/{other}/", f"/fhir/Patient/{other.upper()}", f"/fhir/patient/{other}",
                 f"/fhir/Patient/{other}%00", f"/fhir/Patient/{me}/../{other}", f"/fhir/Patient/{me}%2F..%2F{other}",
                 f"/fhir//Patient/{other}", f"/fhir/Patient/{other}%20", f"/fhir/Patient/%20{other}",
                 f"/fhir/Patient/{other};x", f"/fhir/Observation/{dotted}/", f"/fhir/Observation/{long_id}z"):
        r = c.get(path)
        assert r.status_code in (400, 404, 405), (path, r.status_code, r.text[:300])
        assert other not in r.text or r.json().get("resourceType") == "OperationOutcome", (path, r.text[:300])


def test_audit_event_reads(client, as_patient, pair):
    """AuditEvents are the access log (append-only): the other patient's read is logged, and
    I reach none of their events, by id (fast path and router) or by search."""
    import time

    me, other = pair
    c, oc = as_patient(me), as_patient(other)
    assert oc.get(f"/fhir/Patient/{other}").status_code == 200
    assert c.get(f"/fhir/Patient/{me}").status_code == 200
    theirs: set[str] = set()
    for _ in range(50):  # read events are written every 0.2 s
        theirs = ids(search(client, "/fhir/AuditEvent", {"patient": other}))
        if theirs:
            break
        time.sleep(0.1)
    assert theirs, "the other patient's read was not logged"
    for aid in theirs:
        fast, routed = both_reads(c, f"/fhir/AuditEvent/{aid}")
        assert fast.status_code in (403, 404) and routed.status_code in (403, 404), (aid, fast.status_code, fast.text[:300])
    for q in ({"patient": other}, {"patient": f"{me},{other}"}, {"entity": f"Patient/{other}"}, {}):
        r = c.get("/fhir/AuditEvent", params=q)
        assert r.status_code in (200, 403), (q, r.status_code, r.text[:300])
        if r.status_code == 200:
            assert not (ids(r.json()) & theirs), (q, ids(r.json()) & theirs)


# ---------------------------------------------------------------- typed references, look-alike ids


def test_reference_type_element_does_not_make_a_group_a_patient(client, as_patient, pair):
    """`Reference.type` = Patient on a literal Group/<my id>: not my record (the literal decides)."""
    me, other = pair
    put(client, {"resourceType": "Group", "id": me, "type": "person", "actual": True, "member": [{"entity": ref(f"Patient/{other}")}]})
    typed = obs(client, {"reference": f"Group/{me}", "type": "Patient"})
    typed2 = obs(client, {"reference": f"Practitioner/{me}", "type": "Patient"}, performer=[{"reference": f"Device/{me}", "type": "Patient"}])
    c = as_patient(me)
    for oid in (typed, typed2):
        assert_hidden(c, f"/fhir/Observation/{oid}")
    for q in ({"patient": me}, {"subject:Patient": me}, {"performer:Patient": me}, {"subject": me}, {"_id": f"{typed},{typed2}"},
              {"_id": f"{typed},{typed2}", "patient": me}):
        got = ids(search(c, "/fhir/Observation", q))
        assert not got & {typed, typed2}, (q, got)


def test_ids_differing_only_in_case(client, as_patient):
    me = new_id("pat-case")
    other = me.upper()  # FHIR ids are case-sensitive: another patient
    put(client, {"resourceType": "Patient", "id": me})
    put(client, {"resourceType": "Patient", "id": other})
    theirs = obs(client, ref(f"Patient/{other}"))
    theirs_abs = obs(client, ref(f"{OWN_BASE}/Patient/{other}"))
    mine = obs(client, ref(f"Patient/{me}"))
    c = as_patient(me)
    assert_hidden(c, f"/fhir/Patient/{other}")
    assert_hidden(c, f"/fhir/Observation/{theirs}")
    assert_hidden(c, f"/fhir/Observation/{theirs_abs}")
    assert_visible(c, f"/fhir/Observation/{mine}")
    for q in ({"patient": me}, {"patient": other}, {"subject:Patient": me}, {"patient": f"{me},{other}"}, {"_id": f"{theirs},{mine}"}):
        got = ids(search(c, "/fhir/Observation", q))
        assert got <= {mine} and (q.get("patient") == other or mine in got), (q, got)


def test_head_accept_and_post_search(client, as_patient, pair):
    me, other = pair
    c = as_patient(me)
    theirs = obs(client, ref(f"Patient/{other}"), valueString="OTHER-ONLY")
    assert c.head(f"/fhir/Observation/{theirs}").status_code == 404
    for accept in ("application/fhir+xml", "text/html", "application/json;q=0.1, application/fhir+xml", "*/*;q=0",
                   "application/fhir+json; fhirVersion=4.0", "application/json, application/json"):
        r = c.get(f"/fhir/Observation/{theirs}", headers={"Accept": accept})
        assert r.status_code in (404, 406), (accept, r.status_code, r.text[:200])
        assert "OTHER-ONLY" not in r.text
    for query, body in (({}, {"patient": me, "_id": theirs}), ({"patient": me}, {"patient": other}),
                        ({"patient": me}, {"_id": theirs}), ({"_id": theirs}, {"patient": me}), ({}, {"patient": f"{me},{other}"})):
        r = c.post("/fhir/Observation/_search", params=query, data=body)
        assert r.status_code == 200, (query, body, r.status_code, r.text[:300])
        assert theirs not in ids(r.json()), (query, body)


def test_history_of_a_resource_moved_into_my_compartment(client, as_patient, pair):
    """An Observation first filed under the other patient, then corrected to me: its version 1
    is the other patient's data (R4: compartment membership is a property of the content)."""
    me, other = pair
    c = as_patient(me)
    oid = obs(client, ref(f"Patient/{other}"), valueString="OTHER-SECRET")
    obs(client, ref(f"Patient/{me}"), oid=oid)
    assert_visible(c, f"/fhir/Observation/{oid}")
    r = c.get(f"/fhir/Observation/{oid}/_history/1")
    assert r.status_code == 404, (r.status_code, r.text[:300])
    for path in (f"/fhir/Observation/{oid}/_history", "/fhir/Observation/_history", "/fhir/_history"):
        r = c.get(path)
        assert "OTHER-SECRET" not in r.text, (path, r.status_code)


_BODIES = {
    "Encounter": {"status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}},
    "DiagnosticReport": {"status": "final", "code": {"text": "adv7"}},
    "QuestionnaireResponse": {"status": "completed"},
    "DocumentReference": {"status": "current", "content": [{"attachment": {"contentType": "text/plain", "url": "http://x.example/d"}}]},
    "Condition": {},
    "MedicationRequest": {"status": "active", "intent": "order", "medicationCodeableConcept": {"text": "x"}},
    "Procedure": {"status": "completed"},
    "CarePlan": {"status": "active", "intent": "plan"},
}


@pytest.mark.parametrize("res_type", sorted(_BODIES))
def test_elision_and_fast_read_across_types(client, as_patient, pair, res_type):
    me, other = pair
    put(client, {"resourceType": "Group", "id": me, "type": "person", "actual": True, "member": [{"entity": ref(f"Patient/{other}")}]})

    def make(subject: dict, **extra) -> str:
        rid = new_id(res_type[:3].lower())
        put(client, {"resourceType": res_type, "id": rid, **_BODIES[res_type], "subject": subject, **extra})
        return rid

    mine = {make(ref(f"Patient/{me}")), make(ref(f"{OWN_BASE}/Patient/{me}"))}
    theirs = {make(ref(f"Patient/{other}")), make(ref(f"Group/{me}")), make(ref(f"https://other.example/fhir/Patient/{me}")),
              make(ref(f"#{me}"), contained=[{"resourceType": "Patient", "id": me}]), make({"reference": f"Group/{me}", "type": "Patient"})}
    c = as_patient(me)
    for rid in theirs:
        assert_hidden(c, f"/fhir/{res_type}/{rid}")
    for rid in mine:
        assert_visible(c, f"/fhir/{res_type}/{rid}")
    scope = ",".join(sorted(mine | theirs))
    for q in ({"patient": me}, {"subject:Patient": me}, {"subject": me}, {"patient": f"{me},{other}"}, {"patient": other},
              {"subject": f"Patient/{me}"}, {"subject": f"Group/{me}"}, {"patient": f"https://other.example/fhir/Patient/{me}"}):
        r = c.get(f"/fhir/{res_type}", params={**q, "_id": scope})
        if r.status_code == 400:  # a parameter the type does not have
            continue
        assert r.status_code == 200, (q, r.status_code, r.text[:300])
        got = ids(r.json())
        assert not got & theirs, (res_type, q, got & theirs)
        assert got <= mine
        r = c.get(f"/fhir/{res_type}", params=q)  # without _id: the elided form of the shape
        if r.status_code == 200:
            assert not ids(r.json()) & theirs, (res_type, q)


def test_denied_case_hidden_from_the_fast_read_while_acting(client, as_patient):
    child, _ = patient(client, "SE", _years_ago(13, 30))
    parent, number = patient(client, "SE", date(1981, 8, 8), name="Parent")
    related_person(client, child, ["PRN"], identifier=("http://electronichealth.se/identifier/personnummer", number))
    enc = new_id("enc")
    put(client, {"resourceType": "Encounter", "id": enc, "subject": ref(f"Patient/{child}"), **_BODIES["Encounter"]})
    doc = new_id("doc")
    put(client, {"resourceType": "DocumentReference", "id": doc, "subject": ref(f"Patient/{child}"), **_BODIES["DocumentReference"],
                 "context": {"encounter": [ref(f"Encounter/{enc}")]}, "description": "CASE-SECRET"})
    consent(client, child, {"type": "permit", "actor": proxy_provision(f"Patient/{parent}")["actor"],
                            "provision": [{"type": "deny", "data": [{"meaning": "related", "reference": ref(f"Encounter/{enc}")}]}]})
    bound = as_patient(child, fhir_user=f"Patient/{parent}")
    # the control: the router and the search leave the case out
    for path in (f"/fhir/Encounter/{enc}?_pretty=false", f"/fhir/DocumentReference/{doc}?_pretty=false"):
        assert bound.get(path).status_code == 404, path
    assert doc not in ids(search(bound, "/fhir/DocumentReference", {"patient": child}))
    got = {path: bound.get(path).status_code for path in (f"/fhir/Encounter/{enc}", f"/fhir/DocumentReference/{doc}")}
    assert set(got.values()) == {404}, got


def test_denied_resource_hidden_by_search_while_acting(client, as_patient):
    """The control: the search paths leave the Consent's denied Observation out."""
    child, parent, secret, allowed = _teen_with_one_denied_observation(client)
    bound = as_patient(child, fhir_user=f"Patient/{parent}")
    own = as_patient(parent)
    acting = {"X-Acting-For": f"Patient/{child}"}
    for c, h in ((bound, None), (own, acting)):
        for q in ({"patient": child}, {"subject:Patient": child}, {"_id": f"{secret},{allowed}"}, {}):
            got = ids(search(c, "/fhir/Observation", q, headers=h))
            assert secret not in got and (not q or allowed in got), (q, got)
        r = c.get(f"/fhir/Observation/{allowed}", headers=h)
        assert r.status_code == 200, (r.status_code, r.text[:300])


def test_denied_resource_hidden_from_the_router_read_while_acting(client, as_patient):
    child, parent, secret, _ = _teen_with_one_denied_observation(client)
    bound = as_patient(child, fhir_user=f"Patient/{parent}")
    own = as_patient(parent)
    for c, h in ((bound, {}), (own, {"X-Acting-For": f"Patient/{child}"})):
        r = c.get(f"/fhir/Observation/{secret}?_pretty=false", headers=h)
        assert r.status_code == 404, (h, r.status_code, r.text[:300])


def test_denied_resource_hidden_from_the_fast_read_while_acting(client, as_patient):
    """GET [base]/Observation/<denied> by a parent acting under a Consent that denies that
    Observation: 404 (docs/security.md: outside the token's reach reads as unknown)."""
    child, parent, secret, _ = _teen_with_one_denied_observation(client)
    bound = as_patient(child, fhir_user=f"Patient/{parent}")
    own = as_patient(parent)
    for c, h in ((bound, {}), (own, {"X-Acting-For": f"Patient/{child}"})):
        r = c.get(f"/fhir/Observation/{secret}", headers=h)
        assert r.status_code == 404 and "CHILD-SECRET" not in r.text, (h, r.status_code, r.text[:300])


