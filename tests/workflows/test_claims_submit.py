"""Claim/$submit: policies as data, outcomes, refusals that write nothing,
and who may decide."""

from __future__ import annotations

from datetime import date

import pytest

from fhir_server.errors import FhirError
from fhir_server.workflows.claims.adjudication import adjudicate_preauthorization
from fhir_server.workflows.claims.policy import PolicyBook, policy_book
from tests.workflows.claims_journey import TT, approved, claim, decision, eligible_items, submit_params, treatment

INSURER_ID = "http://fhir-server.local/NamingSystem/insurer-id"


@pytest.fixture
def parties(client):
    def make(resource):
        r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
        assert r.status_code == 201, r.text
        return f"{resource['resourceType']}/{r.json()['id']}"

    insurer = make({"resourceType": "Organization", "name": "Tryg Sundhed"})
    patient = make({"resourceType": "Patient", "name": [{"family": "Hansen", "given": ["Mette"]}]})
    coverage = make({"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": patient}, "payor": [{"reference": insurer}]})
    return patient, coverage, insurer, make


def _count(client, res_type):
    return client.get(f"/fhir/{res_type}?_summary=count").json()["total"]


def test_policy_file_has_a_default_and_insurer_policies():
    book = policy_book()
    assert book.default.initial_treatments == 3
    assert book.for_insurer(["Organization/unknown"]) is book.default
    special = book.for_insurer([f"{INSURER_ID}|mental-health-first"])
    assert special.id == "example-mental-health-first" and special.initial_treatments == 5


def test_policy_without_default_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("policies:\n  - id: x\n    initial_treatments: 1\n    approval_valid_days: 1\n")
    with pytest.raises(ValueError):
        PolicyBook.load(path)


@pytest.mark.parametrize("items,outcome,approved_counts", [
    ([treatment()], "complete", [3]),
    ([treatment(quantity=2)], "complete", [2]),
    ([treatment(quantity=6)], "partial", [3]),
    ([treatment(), treatment("kiropraktik", 1, sequence=2)], "complete", [3, 1]),
    ([treatment("tandbehandling")], "queued", [0]),
    ([], "queued", []),
])
def test_adjudication(items, outcome, approved_counts):
    d = adjudicate_preauthorization({"item": items}, policy_book().default)
    assert d.outcome == outcome
    assert [i.approved for i in d.items] == approved_counts


def test_partial_approval_and_its_guarantee(client, parties):
    patient, coverage, insurer, _ = parties
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment(quantity=6)])))
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "partial" and approved(r.json()) == [3]
    case = r.json()["request"]["reference"]
    docs = client.get(f"/fhir/DocumentReference?related={case}").json()["entry"]
    assert len(docs) == 1


def test_insurer_specific_policy_by_identifier(client, parties):
    patient, coverage, _insurer, make = parties
    insurer = make({"resourceType": "Organization", "name": "Mental Health First", "identifier": [{"system": INSURER_ID, "value": "mental-health-first"}]})
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment("psykolog")])))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outcome"] == "complete" and approved(body) == [5]
    start, end = (date.fromisoformat(body["preAuthPeriod"][k]) for k in ("start", "end"))
    assert (end - start).days == 180
    # the default policy's treatment types do not apply to this insurer
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment("fysioterapi")])))
    assert r.json()["outcome"] == "queued"


def test_coverage_specific_policy_wins_over_the_insurers(client, parties):
    """A policy matched by the Coverage (its plan class here) applies before the insurer's
    or the default one: 2 treatments for 60 days on the basic plan, 3 for 90 otherwise."""
    patient, _coverage, insurer, make = parties
    plan = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]}, "value": "basis"}
    basic = make({"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": patient},
                  "payor": [{"reference": insurer}], "class": [plan]})
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, basic, insurer, items=[treatment(quantity=6)])))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outcome"] == "partial" and approved(body) == [2]
    start, end = (date.fromisoformat(body["preAuthPeriod"][k]) for k in ("start", "end"))
    assert (end - start).days == 60
    book = policy_book()
    assert book.for_claim(["class:plan|basis"], [f"{INSURER_ID}|mental-health-first"]).id == "example-basic-plan"
    assert book.for_claim(["class:plan|other"], [f"{INSURER_ID}|mental-health-first"]).id == "example-mental-health-first"
    assert book.for_claim([], []) is book.default


def test_treatment_outside_the_policy_is_queued_with_a_task(client, parties):
    patient, coverage, insurer, _ = parties
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment("tandbehandling")])))
    assert r.status_code == 200
    assert r.json()["outcome"] == "queued"
    tasks = client.get(f"/fhir/Task?focus={r.json()['request']['reference']}").json()["entry"]
    assert tasks[0]["resource"]["code"]["coding"][0]["code"] == "approve"


def test_bare_claim_body_is_accepted(client, parties):
    patient, coverage, insurer, _ = parties
    r = client.post("/fhir/Claim/$submit", json=claim(patient, coverage, insurer, items=[treatment()]))
    assert r.status_code == 200 and r.json()["outcome"] == "complete"


@pytest.mark.parametrize("mutate,status", [
    (lambda c: c.pop("patient"), 400),  # Claim.patient is required by R4: invalid resource
    (lambda c: c.update(status="draft"), 422),  # only an active claim is adjudicated
    (lambda c: (c.pop("insurer"), c.update(insurance=[{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/none"}}])), 422),
    (lambda c: c.update(related=[{"claim": {"reference": "Claim/nope"}, "relationship": {"coding": [{"code": "prior"}]}}]), 422),
    (lambda c: c.update(use="claim"), 422),  # a reimbursement without its case and bills
    # a number of treatments the workflow cannot act on is refused, never rewritten
    (lambda c: c["item"][0].update(quantity={"value": -5}), 422),
    (lambda c: c["item"][0].update(quantity={"value": 0}), 422),
    (lambda c: c["item"][0].update(quantity={"value": 2.5}), 422),
    (lambda c: c["item"][0].update(quantity={"value": 1e300}), 422),
    # two items with one sequence: a decision could not say which it approves
    (lambda c: c["item"].append(treatment("kiropraktik")), 422),
])
def test_refused_submissions_write_nothing(client, parties, mutate, status):
    patient, coverage, insurer, _ = parties
    body = claim(patient, coverage, insurer, items=[treatment()])
    mutate(body)
    before = {t: _count(client, t) for t in ("Claim", "ClaimResponse", "Task", "DocumentReference", "Binary")}
    r = client.post("/fhir/Claim/$submit", json=submit_params(body))
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert {t: _count(client, t) for t in before} == before


def test_prior_claim_of_another_patient_is_refused(client, parties):
    patient, coverage, insurer, make = parties
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment()])))
    case = r.json()["request"]["reference"]
    other = make({"resourceType": "Patient", "name": [{"family": "Other"}]})
    more = claim(other, coverage, insurer, items=[treatment()], related=[{"claim": {"reference": case}, "relationship": {"coding": [{"code": "prior"}]}}])
    r = client.post("/fhir/Claim/$submit", json=submit_params(more))
    assert r.status_code == 422
    assert "another patient" in r.json()["issue"][0]["diagnostics"]


def test_submit_needs_post_and_a_claim(client):
    assert client.get("/fhir/Claim/$submit").status_code == 405
    r = client.post("/fhir/Claim/$submit", json={"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {"resourceType": "Patient"}}]})
    assert r.status_code == 422
    assert client.post("/fhir/Claim/$submit", content=b"", headers={"Content-Type": "application/fhir+json"}).status_code == 400
    assert client.post("/fhir/Patient/$submit", json={}).status_code == 400
    meta = client.get("/fhir/metadata").json()
    ops = [o for r in meta["rest"][0]["resource"] if r["type"] == "Claim" for o in r.get("operation", [])]
    assert any(o["name"] == "submit" for o in ops)


def test_a_patient_cannot_decide_their_own_claim(app, client, parties):
    from fhir_server.rest import interactions as ix
    from fhir_server.rest.context import RequestContext
    from fhir_server.security.authz import Principal

    patient, coverage, insurer, _ = parties
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment("tandbehandling")])))
    claim_id = r.json()["request"]["reference"].split("/")[1]
    body = decision(claim_id, patient, insurer, "preauthorization", item=eligible_items(3))
    as_patient = RequestContext(base_url="", principal=Principal(subject="pat", scopes=frozenset({"patient/*.read", "patient/ClaimResponse.write"})))
    with pytest.raises(FhirError) as exc:
        with app.state.db.write() as conn:
            ix.create(conn, as_patient, "ClaimResponse", ix.ParsedResource.from_preserving(body))
    assert exc.value.status == 403
    as_staff = RequestContext(base_url="", principal=Principal(subject="handler", scopes=frozenset({"user/*.*"}),
                                                         fhir_user="Practitioner/handler"))
    with app.state.db.write() as conn:
        out = ix.create(conn, as_staff, "ClaimResponse", ix.ParsedResource.from_preserving(body))
    assert out.status == 201


def _eligible(value, sequence=1) -> list[dict]:
    from tests.workflows.claims_journey import ADJ

    return [{"itemSequence": sequence, "adjudication": [{"category": {"coding": [{"system": ADJ, "code": "eligible"}]}, "value": value}]}]


def test_a_decision_names_the_claims_items_in_whole_numbers_and_is_made_once(app, client, parties, issue_token):
    """Through HTTP with a case handler's token (a Practitioner's user/ token): approved counts
    that are no whole number in range, or an item the Claim does not have, are a 422; the first
    decision closes the request; a second one (or one on a Claim approved at once) is a 409 and
    issues no second payment guarantee."""
    from fastapi.testclient import TestClient

    patient, coverage, insurer, _ = parties
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment()])))
    case = r.json()["request"]["reference"]
    more = claim(patient, coverage, insurer, items=[treatment(quantity=3)],
                 related=[{"claim": {"reference": case}, "relationship": {"coding": [{"code": "prior"}]}}])
    r = client.post("/fhir/Claim/$submit", json=submit_params(more))
    assert r.json()["outcome"] == "queued"
    more_id = r.json()["request"]["reference"].split("/")[1]
    token = issue_token(scope="user/*.cruds", fhir_user="Practitioner/case-handler-18")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as staff:
        before = {t: _count(client, t) for t in ("ClaimResponse", "DocumentReference", "Binary")}
        for items, where in ((_eligible(1e300), "ClaimResponse.item[0].adjudication[0].value"),
                             (_eligible(2.5), "ClaimResponse.item[0].adjudication[0].value"),
                             (_eligible(-1), "ClaimResponse.item[0].adjudication[0].value"),
                             (_eligible(3, sequence=9), "ClaimResponse.item[0].itemSequence")):
            r = staff.post("/fhir/ClaimResponse", json=decision(more_id, patient, insurer, "preauthorization", item=items))
            assert r.status_code == 422, r.text
            assert r.json()["issue"][0]["expression"] == [where]
        assert {t: _count(client, t) for t in before} == before
        r = staff.post("/fhir/ClaimResponse", json=decision(more_id, patient, insurer, "preauthorization", item=_eligible(3)))
        assert r.status_code == 201, r.text
        guarantees = client.get("/fhir/DocumentReference", params={"related": case, "type": "payment-guarantee"}).json()["total"]
        assert guarantees == 2
        for claim_id in (more_id, case.split("/")[1]):  # decided; approved at once by $submit
            again = staff.post("/fhir/ClaimResponse", json=decision(claim_id, patient, insurer, "preauthorization", item=_eligible(3)))
            assert again.status_code == 409, again.text
            assert again.json()["issue"][0]["code"] == "conflict"
        assert client.get("/fhir/DocumentReference", params={"related": case, "type": "payment-guarantee"}).json()["total"] == 2
        # the decision itself may still be corrected (an update is no second decision)
        stored = r.json()
        assert staff.put(f"/fhir/ClaimResponse/{stored['id']}", json=dict(stored, disposition="Approved after review")).status_code == 200


def test_reimbursement_with_another_patients_document_reads_as_missing(app, client, parties, issue_token):
    """A patient citing another patient's bill gets the same 422 as for a document that does
    not exist: the answer does not confirm that the other document exists."""
    from fastapi.testclient import TestClient

    patient, coverage, insurer, make = parties
    other = make({"resourceType": "Patient", "name": [{"family": "Someone"}]})
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment()])))
    case = r.json()["request"]["reference"]
    theirs = client.post("/fhir/DocumentReference", json={
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": other},
        "context": {"related": [{"reference": case}]},
        "content": [{"attachment": {"contentType": "text/plain", "data": "aGVq"}}]}).json()["id"]
    related = [{"claim": {"reference": case}, "relationship": {"coding": [{"code": "associated"}]}}]

    def refund(doc_id: str) -> dict:
        return submit_params(claim(patient, coverage, insurer, use="claim", related=related, supportingInfo=[{
            "sequence": 1, "category": {"coding": [{"code": "attachment"}]},
            "valueReference": {"reference": f"DocumentReference/{doc_id}"}}]))

    token = issue_token(scope="patient/*.cruds", patient=patient.split("/")[1])
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as portal:
        answers = []
        for doc_id in (theirs, "no-such-document"):
            r = portal.post("/fhir/Claim/$submit", json=refund(doc_id))
            assert r.status_code == 422, r.text
            issue = r.json()["issue"][0]
            answers.append((issue["code"], issue["diagnostics"].replace(doc_id, "<id>")))
    assert answers[0] == answers[1]


def test_unrelated_claim_responses_are_plain_resources(client):
    """A ClaimResponse for a claim this server never adjudicated is stored as any resource (R4 examples)."""
    body = decision("not-here", "Patient/1", "Organization/1", "claim", outcome="complete")
    assert client.post("/fhir/ClaimResponse", json=body).status_code == 201


def test_treatment_codes_are_in_the_policy_system():
    assert all(system == TT for system, _code in policy_book().default.treatment_types)
