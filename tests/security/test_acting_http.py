"""Acting for another patient over HTTP, with real tokens of the server's issuer:
guardians by age, per-case consent, revocation at once, X-Acting-For, includes,
$everything, $export and Patient/$proxies."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from fastapi.testclient import TestClient

from fhir_server import clock

from .family import case_claim, SYSTEMS, consent, exported, new_id, patient, proxy_provision, put, related_person

SCOPE = "openid fhirUser patient/*.rs"


def today() -> date:
    return datetime.now(timezone.utc).date()


def years_ago(years: int, days: int = 0) -> date:
    t = today()
    born = t.replace(year=t.year - years)
    return date.fromordinal(born.toordinal() - days)


def family(client, country: str, child_born: date, codes=("PRN",)) -> tuple[str, str]:
    child, _ = patient(client, country, child_born)
    parent, number = patient(client, country, date(1981, 8, 8), name="Parent")
    related_person(client, child, list(codes), identifier=(SYSTEMS[country], number))
    return child, parent


def questionnaire_response(client, child: str) -> str:
    qr = new_id("qr")
    put(client, {"resourceType": "QuestionnaireResponse", "id": qr, "status": "completed", "subject": {"reference": f"Patient/{child}"}})
    return qr


def ids(bundle: dict, res_type: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if res_type is None or e["resource"]["resourceType"] == res_type}


def test_parent_reads_a_12_year_old_swedes_questionnaire_responses(client, as_person):
    child, parent = family(client, "SE", years_ago(12, 200))
    qr = questionnaire_response(client, child)
    c = as_person(parent, patient=child)
    r = c.get("/fhir/QuestionnaireResponse", params={"patient": child})
    assert r.status_code == 200, r.text
    assert ids(r.json()) == {qr}
    assert c.get(f"/fhir/QuestionnaireResponse/{qr}").status_code == 200
    # the same through X-Acting-For with a token bound to the parent's own record
    own = as_person(parent, patient=parent)
    r = own.get("/fhir/QuestionnaireResponse", params={"patient": child}, headers={"X-Acting-For": f"Patient/{child}"})
    assert ids(r.json()) == {qr}
    # without the header the parent's own token sees nothing of the child
    assert ids(own.get("/fhir/QuestionnaireResponse", params={"patient": child}).json()) == set()


def test_parent_cannot_read_a_13_year_old_without_consent(client, as_person):
    child, parent = family(client, "SE", years_ago(13, 1))
    qr = questionnaire_response(client, child)
    c = as_person(parent, patient=child)
    r = c.get("/fhir/QuestionnaireResponse", params={"patient": child})
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
    assert c.get(f"/fhir/QuestionnaireResponse/{qr}").status_code == 403
    own = as_person(parent, patient=parent)
    r = own.get(f"/fhir/QuestionnaireResponse/{qr}", headers={"X-Acting-For": f"Patient/{child}"})
    assert r.status_code == 403
    # with the young person's consent the parent sees the record again
    consent(client, child, proxy_provision(f"Patient/{parent}"))
    assert c.get(f"/fhir/QuestionnaireResponse/{qr}").status_code == 200


def test_access_ends_on_the_birthday_with_the_server_clock(client, as_person):
    born = date(2014, 5, 20)
    child, parent = family(client, "SE", born)
    qr = questionnaire_response(client, child)
    c = as_person(parent, patient=child)
    with clock.frozen(datetime(2027, 5, 19, 23, 0, tzinfo=timezone.utc)) as t:
        assert c.get(f"/fhir/QuestionnaireResponse/{qr}").status_code == 200
        t.set(datetime(2027, 5, 20, 0, 1, tzinfo=timezone.utc))
        assert c.get(f"/fhir/QuestionnaireResponse/{qr}").status_code == 403


def test_bad_or_unsupported_acting_for_header(client, as_person, issue_token):
    stranger, _ = patient(client, "SE", date(1990, 1, 1))
    child, _parent = family(client, "SE", years_ago(5))
    c = as_person(stranger, patient=stranger)
    assert c.get("/fhir/Patient", headers={"X-Acting-For": f"Patient/{child}"}).status_code == 403
    assert c.get("/fhir/Patient", headers={"X-Acting-For": "Observation/x y"}).status_code == 400
    system = TestClient(c.app, base_url="http://testserver", headers={"Authorization": f"Bearer {issue_token('system/*.*')}"})
    assert system.get("/fhir/Patient", headers={"X-Acting-For": f"Patient/{child}"}).status_code == 403


@pytest.fixture
def danish_case(client):
    """A Danish 16-year-old with two claims (each with a DocumentReference, a Communication,
    a ClaimResponse and a Task), an Observation, and two parents."""
    child, _ = patient(client, "DK", years_ago(16, 30))
    mother, m_no = patient(client, "DK", date(1980, 2, 2), name="Mother")
    father, f_no = patient(client, "DK", date(1979, 3, 3), name="Father")
    related_person(client, child, ["MTH"], identifier=(SYSTEMS["DK"], m_no))
    related_person(client, child, ["FTH"], identifier=(SYSTEMS["DK"], f_no))
    subject = {"reference": f"Patient/{child}"}
    made: dict[str, dict[str, str]] = {}
    for case in ("a", "b"):
        claim = new_id(f"claim-{case}")
        case_claim(client, claim, subject)
        ref = {"reference": f"Claim/{claim}"}
        doc, comm, resp, task = new_id("doc"), new_id("comm"), new_id("cr"), new_id("task")
        put(client, {"resourceType": "DocumentReference", "id": doc, "status": "current", "subject": subject,
                     "content": [{"attachment": {"contentType": "text/plain", "data": "aGVq"}}], "context": {"related": [ref]}})
        put(client, {"resourceType": "Communication", "id": comm, "status": "completed", "subject": subject, "basedOn": [ref]})
        put(client, {"resourceType": "ClaimResponse", "id": resp, "status": "active", "use": "claim", "patient": subject, "created": "2026-01-02",
                     "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
                     "insurer": {"display": "Insurer"}, "outcome": "complete", "request": ref})
        put(client, {"resourceType": "Task", "id": task, "status": "requested", "intent": "order", "for": subject, "focus": ref})
        made[case] = {"Claim": claim, "DocumentReference": doc, "Communication": comm, "ClaimResponse": resp, "Task": task}
    obs = new_id("obs")
    put(client, {"resourceType": "Observation", "id": obs, "status": "final", "code": {"text": "weight"}, "subject": subject})
    return {"child": child, "mother": mother, "father": father, "cases": made, "obs": obs}


def test_per_case_consent_shows_that_case_only(client, as_person, danish_case):
    d = danish_case
    case_a, case_b = d["cases"]["a"], d["cases"]["b"]
    consent(client, d["child"], proxy_provision(f"Patient/{d['mother']}", data=[f"Claim/{case_a['Claim']}"]))
    mother = as_person(d["mother"], patient=d["child"])
    for res_type, rid in case_a.items():
        assert mother.get(f"/fhir/{res_type}/{rid}").status_code == 200, res_type
    for res_type, rid in case_b.items():
        assert mother.get(f"/fhir/{res_type}/{rid}").status_code == 404, res_type
    assert mother.get(f"/fhir/Observation/{d['obs']}").status_code == 404
    assert ids(mother.get("/fhir/Claim").json()) == {case_a["Claim"]}
    assert ids(mother.get("/fhir/DocumentReference").json()) == {case_a["DocumentReference"]}
    assert ids(mother.get("/fhir/Observation").json()) == set()
    assert mother.get("/fhir/Claim", params={"_summary": "count"}).json()["total"] == 1
    # the other parent has no consent: refused
    father = as_person(d["father"], patient=d["child"])
    assert father.get(f"/fhir/Claim/{case_a['Claim']}").status_code == 403


def test_revocation_takes_effect_at_once(client, as_person, danish_case):
    d = danish_case
    claim = d["cases"]["a"]["Claim"]
    cid = consent(client, d["child"], proxy_provision(f"Patient/{d['mother']}", data=[f"Claim/{claim}"]))
    mother = as_person(d["mother"], patient=d["child"])
    assert mother.get(f"/fhir/Claim/{claim}").status_code == 200
    r = client.get(f"/fhir/Consent/{cid}").json()
    r["status"] = "inactive"
    assert client.put(f"/fhir/Consent/{cid}", json=r).status_code == 200
    assert mother.get(f"/fhir/Claim/{claim}").status_code == 403


def test_includes_everything_respect_the_case(client, as_person, danish_case):
    d = danish_case
    case_a, case_b = d["cases"]["a"], d["cases"]["b"]
    consent(client, d["child"], proxy_provision(f"Patient/{d['mother']}", data=[f"Claim/{case_a['Claim']}"]))
    mother = as_person(d["mother"], patient=d["child"])
    # _revinclude from the claims: only case A's documents and responses
    r = mother.get("/fhir/Claim", params={"_revinclude": ["DocumentReference:related", "ClaimResponse:request"]}).json()
    assert ids(r) == {case_a["Claim"], case_a["DocumentReference"], case_a["ClaimResponse"]}
    # _include from responses: case B's claim is not dragged in
    r = mother.get("/fhir/ClaimResponse", params={"_include": "ClaimResponse:request"}).json()
    assert ids(r) == {case_a["ClaimResponse"], case_a["Claim"]}
    # _revinclude from the Patient: no Observation, no case B
    r = mother.get("/fhir/Patient", params={"_id": d["child"], "_revinclude": ["Observation:subject", "Claim:patient", "Task:patient"]}).json()
    assert ids(r) == {d["child"], case_a["Claim"], case_a["Task"]}
    # $everything
    r = mother.get(f"/fhir/Patient/{d['child']}/$everything")
    assert r.status_code == 200, r.text
    got = ids(r.json())
    assert set(case_a.values()) | {d["child"]} == got
    assert not got & (set(case_b.values()) | {d["obs"]})


def test_export_respects_the_case(client, app, as_person, danish_case):
    d = danish_case
    case_a = d["cases"]["a"]
    consent(client, d["child"], proxy_provision(f"Patient/{d['mother']}", data=[f"Claim/{case_a['Claim']}"]))
    mother = as_person(d["mother"], patient=d["child"], scope="patient/*.rs")
    got = exported(mother, app)
    assert got == {t: {rid} for t, rid in case_a.items()} | {"Patient": {d["child"]}}


def test_proxies_lists_whom_and_why(client, as_person, danish_case):
    d = danish_case
    small, _ = patient(client, "DK", years_ago(6))
    mother_no = [i for i in client.get(f"/fhir/Patient/{d['mother']}").json()["identifier"]][0]
    related_person(client, small, ["MTH"], identifier=(mother_no["system"], mother_no["value"]))
    claim = d["cases"]["a"]["Claim"]
    consent(client, d["child"], proxy_provision(f"Patient/{d['mother']}", role="GUARD", data=[f"Claim/{claim}"], end="2099-01-01"))
    r = as_person(d["mother"], patient=d["mother"]).get("/fhir/Patient/$proxies")
    assert r.status_code == 200, r.text
    listed = {}
    for p in r.json()["parameter"]:
        parts = {x["name"]: x for x in p["part"] if x["name"] == "patient"}
        reasons = [{y["name"]: y for y in x["part"]} for x in p["part"] if x["name"] == "reason"]
        listed[parts["patient"]["valueReference"]["reference"]] = reasons
    assert set(listed) == {f"Patient/{small}", f"Patient/{d['child']}"}
    assert listed[f"Patient/{small}"][0]["kind"]["valueCode"] == "guardian"
    teen = listed[f"Patient/{d['child']}"][0]
    assert teen["kind"]["valueCode"] == "consent" and teen["case"]["valueReference"]["reference"] == f"Claim/{claim}"
    assert teen["until"]["valueDateTime"].startswith("2099-01-02")
    # the father: nobody
    assert as_person(d["father"], patient=d["father"]).get("/fhir/Patient/$proxies").json().get("parameter", []) == []
    # a backend token names no person
    assert client.get("/fhir/Patient/$proxies").status_code == 403


def test_consent_action_limits_writes(client, as_person, danish_case):
    d = danish_case
    claim = d["cases"]["a"]["Claim"]
    consent(client, d["child"], proxy_provision(f"Patient/{d['mother']}", data=[f"Claim/{claim}"], actions=["access"]))
    mother = as_person(d["mother"], patient=d["child"], scope="patient/*.cruds")
    body = {"resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{d['child']}"}, "basedOn": [{"reference": f"Claim/{claim}"}]}
    r = mother.post("/fhir/Communication", json=body)
    assert r.status_code == 403 and "does not allow 'create'" in r.text
    consent(client, d["child"], proxy_provision(f"Patient/{d['mother']}", data=[f"Claim/{claim}"], actions=["access", "collect"]))
    assert mother.post("/fhir/Communication", json=body).status_code == 201


def test_user_scopes_and_related_person_users(client, as_person):
    child, parent = family(client, "FI", years_ago(9))
    qr = questionnaire_response(client, child)
    own_qr = questionnaire_response(client, parent)
    # a user/ token of the parent: their own record, or the child's with X-Acting-For
    user = as_person(parent, scope="openid fhirUser user/*.rs")
    assert ids(user.get("/fhir/QuestionnaireResponse").json()) == {own_qr}
    assert ids(user.get("/fhir/QuestionnaireResponse", headers={"X-Acting-For": f"Patient/{child}"}).json()) == {qr}
    # a RelatedPerson as the logged-in user: nothing without a patient, the child with one
    rp = related_person(client, child, ["GUARD"])
    guardian = as_person(rp, scope="openid fhirUser user/*.rs", ref_type="RelatedPerson")
    assert ids(guardian.get("/fhir/QuestionnaireResponse").json()) == set()
    assert ids(guardian.get("/fhir/QuestionnaireResponse", headers={"X-Acting-For": f"Patient/{child}"}).json()) == {qr}
    stranger, _ = patient(client, "FI", years_ago(8))
    assert guardian.get("/fhir/QuestionnaireResponse", headers={"X-Acting-For": f"Patient/{stranger}"}).status_code == 403
