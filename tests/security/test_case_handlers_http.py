"""The case's handlers (search/case_access.py, docs/consent.md "Who handles a case"): while a
case consent is in force, staff see a case's documents only when the case names them
(Claim.provider/enterer/careTeam.provider, EpisodeOfCare.careManager/team, Encounter.participant,
CarePlan.author/contributor/careTeam, through their PractitionerRoles, Organizations and
CareTeams), a Task of the case has them as owner, or - when the consent names staff actors -
only those actors. Binary searches follow the same rule. Real HTTP, real tokens."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi.testclient import TestClient

from .family import consent, new_id, patient, put

CODING = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]}


def ids(bundle: dict, res_type: str = "DocumentReference") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry") or [] if e["resource"]["resourceType"] == res_type}


@pytest.fixture
def as_user(app, issue_token):
    opened = []

    def make(fhir_user: str) -> TestClient:
        token = issue_token(scope="user/*.rs", fhir_user=fhir_user)
        c = TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"})
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


def _case_with_document(client, case: dict) -> tuple[str, str, str]:
    """(patient id, DocumentReference id, Binary id) of a new patient whose document belongs to `case`
    (a resource without id/subject; filled in here), shared by a case consent naming no staff."""
    pid, _ = patient(client, "DK", date(1990, 6, 6))
    case = dict(case, id=new_id(case["resourceType"].lower()))
    key = {"Claim": "patient", "EpisodeOfCare": "patient", "Encounter": "subject", "CarePlan": "subject"}[case["resourceType"]]
    case[key] = {"reference": f"Patient/{pid}"}
    put(client, case)
    ref = f"{case['resourceType']}/{case['id']}"
    doc_id = new_id("doc")
    r = client.post("/fhir/Binary", content=b"case text", headers={"Content-Type": "text/plain", "X-Security-Context": f"DocumentReference/{doc_id}"})
    assert r.status_code == 201, r.text
    binary = r.json()["id"] if r.content else r.headers["location"].split("/")[-3]
    put(client, {"resourceType": "DocumentReference", "id": doc_id, "status": "current", "subject": {"reference": f"Patient/{pid}"},
                 "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/{binary}"}}],
                 "context": {"related": [{"reference": ref}]}})
    # names no staff (the patient as the consenting party): shared with the case's handlers
    consent(client, pid, {"type": "permit", "period": {"start": "2026-01-01"},
                          "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PAT"}]},
                                     "reference": {"reference": f"Patient/{pid}"}}],
                          "data": [{"meaning": "related", "reference": {"reference": ref}}]})
    return pid, doc_id, binary


def _sees(c: TestClient, pid: str, doc: str, binary: str) -> bool:
    """Whether `c` sees the document by search and read and its Binary by search; all must agree."""
    by_search = doc in ids(c.get("/fhir/DocumentReference", params={"subject": f"Patient/{pid}"}).json())
    by_read = c.get(f"/fhir/DocumentReference/{doc}").status_code == 200
    binaries = c.get("/fhir/Binary", params={"_id": binary})
    assert binaries.status_code == 200, binaries.text
    by_binary = binary in ids(binaries.json(), "Binary")
    assert by_search == by_read == by_binary, (by_search, by_read, by_binary)
    return by_search


def _claim(**refs) -> dict:
    return {"resourceType": "Claim", "status": "active", "use": "claim", "created": "2026-01-01", "type": CODING,
            "priority": {"coding": [{"code": "normal"}]}, "provider": {"display": "Clinic"},
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Policy"}}], **refs}


def test_claim_provider_and_enterer_handle_the_case_others_do_not(client, as_user):
    a, b, c = new_id("prac"), new_id("prac"), new_id("prac")
    pid, doc, binary = _case_with_document(client, _claim(provider={"reference": f"Practitioner/{a}"},
                                                          enterer={"reference": f"Practitioner/{b}"}))
    assert _sees(as_user(f"Practitioner/{a}"), pid, doc, binary)
    assert _sees(as_user(f"Practitioner/{b}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{c}"), pid, doc, binary)  # staff, but not a handler of the case
    assert client.get("/fhir/Binary", params={"_id": binary}).json()["entry"]  # a backend client sees it


def test_provider_organization_reaches_its_staff_by_practitioner_role(client, as_user):
    org, staff, outsider = new_id("org"), new_id("prac"), new_id("prac")
    role = new_id("role")
    put(client, {"resourceType": "PractitionerRole", "id": role, "active": True,
                 "practitioner": {"reference": f"Practitioner/{staff}"}, "organization": {"reference": f"Organization/{org}"}})
    pid, doc, binary = _case_with_document(client, _claim(provider={"reference": f"Organization/{org}"}))
    assert _sees(as_user(f"Practitioner/{staff}"), pid, doc, binary)
    assert _sees(as_user(f"PractitionerRole/{role}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{outsider}"), pid, doc, binary)
    assert not _sees(as_user(f"PractitionerRole/{new_id('role')}"), pid, doc, binary)


def test_care_team_members_of_an_episode_and_a_care_plan(client, as_user):
    member, author, outsider = new_id("prac"), new_id("prac"), new_id("prac")
    team = new_id("team")
    put(client, {"resourceType": "CareTeam", "id": team, "participant": [{"member": {"reference": f"Practitioner/{member}"}}]})
    pid, doc, binary = _case_with_document(client, {"resourceType": "EpisodeOfCare", "status": "active",
                                                    "team": [{"reference": f"CareTeam/{team}"}]})
    assert _sees(as_user(f"Practitioner/{member}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{outsider}"), pid, doc, binary)
    pid, doc, binary = _case_with_document(client, {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                                                    "author": {"reference": f"Practitioner/{author}"},
                                                    "careTeam": [{"reference": f"CareTeam/{team}"}]})
    assert _sees(as_user(f"Practitioner/{author}"), pid, doc, binary)
    assert _sees(as_user(f"Practitioner/{member}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{outsider}"), pid, doc, binary)


def test_encounter_participant_and_the_owner_of_a_task_of_the_case(client, as_user):
    doctor, worker, outsider = new_id("prac"), new_id("prac"), new_id("prac")
    pid, doc, binary = _case_with_document(client, {"resourceType": "Encounter", "status": "finished",
                                                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                                                    "participant": [{"individual": {"reference": f"Practitioner/{doctor}"}}]})
    assert _sees(as_user(f"Practitioner/{doctor}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{worker}"), pid, doc, binary)
    encounter = client.get(f"/fhir/DocumentReference/{doc}").json()["context"]["related"][0]["reference"]
    task = new_id("task")
    put(client, {"resourceType": "Task", "id": task, "status": "in-progress", "intent": "order",
                 "focus": {"reference": encounter}, "owner": {"reference": f"Practitioner/{worker}"}})
    assert _sees(as_user(f"Practitioner/{worker}"), pid, doc, binary)  # evaluated on the next request
    client.delete(f"/fhir/Task/{task}")
    assert not _sees(as_user(f"Practitioner/{worker}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{outsider}"), pid, doc, binary)


def _insurer_case(client):
    """A claim case with a document, its provider, and a caseworker of an insurer (a
    PractitionerRole); returns (provider, insurer_staff, insurer, pid, doc, binary, consent id,
    the case reference the document names)."""
    provider, insurer_staff = new_id("prac"), new_id("prac")
    insurer = new_id("insurer")
    put(client, {"resourceType": "PractitionerRole", "id": new_id("role"), "active": True,
                 "practitioner": {"reference": f"Practitioner/{insurer_staff}"}, "organization": {"reference": f"Organization/{insurer}"}})
    pid, doc, binary = _case_with_document(client, _claim(provider={"reference": f"Practitioner/{provider}"}))
    cid = client.get("/fhir/Consent", params={"patient": f"Patient/{pid}"}).json()["entry"][0]["resource"]["id"]
    ref = client.get(f"/fhir/DocumentReference/{doc}").json()["context"]["related"][0]["reference"]
    return provider, insurer_staff, insurer, pid, doc, binary, cid, ref


def test_a_consent_naming_staff_actors_shares_with_those_only(client, as_user):
    provider, insurer_staff, insurer, pid, doc, binary, cid, ref = _insurer_case(client)
    assert _sees(as_user(f"Practitioner/{provider}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{insurer_staff}"), pid, doc, binary)
    consent(client, pid, {"type": "permit", "period": {"start": "2026-01-01"},
                          "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                                     "reference": {"reference": f"Organization/{insurer}"}}],
                          "data": [{"meaning": "related", "reference": {"reference": ref}}]}, cid=cid)
    assert _sees(as_user(f"Practitioner/{insurer_staff}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{provider}"), pid, doc, binary)  # the consent names the insurer only


def test_a_token_naming_no_staff_member_sees_no_case_document(client, as_user, app, issue_token):
    pid, doc, binary = _case_with_document(client, _claim(provider={"reference": f"Practitioner/{new_id('prac')}"}))
    assert not _sees(as_user(f"Practitioner/{new_id('prac')}"), pid, doc, binary)
    r = as_user(f"Practitioner/{new_id('prac')}").get("/fhir/Binary", params={"_count": "500"})
    assert binary not in ids(r.json(), "Binary")


def test_staff_actors_of_a_nested_provision_limit_the_sharing_too(client, as_user):
    provider, insurer_staff, insurer, pid, doc, binary, cid, ref = _insurer_case(client)
    consent(client, pid, {"type": "permit", "period": {"start": "2026-01-01"},
                          "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PAT"}]},
                                     "reference": {"reference": f"Patient/{pid}"}}],
                          "data": [{"meaning": "related", "reference": {"reference": ref}}],
                          "provision": [{"type": "permit", "actor": [
                              {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                               "reference": {"reference": f"Organization/{insurer}"}}]}]}, cid=cid)
    assert _sees(as_user(f"Practitioner/{insurer_staff}"), pid, doc, binary)
    assert not _sees(as_user(f"Practitioner/{provider}"), pid, doc, binary)


def test_handling_one_case_opens_no_other_case(client, as_user):
    """The handler rule is evaluated per case: a staff member named by one consented case does
    not see the documents of another consented case they do not handle."""
    a, b = new_id("prac"), new_id("prac")
    p1, doc1, bin1 = _case_with_document(client, _claim(provider={"reference": f"Practitioner/{a}"}))
    p2, doc2, bin2 = _case_with_document(client, _claim(provider={"reference": f"Practitioner/{b}"}))
    staff_a = as_user(f"Practitioner/{a}")
    assert _sees(staff_a, p1, doc1, bin1)
    assert not _sees(staff_a, p2, doc2, bin2)
    assert _sees(as_user(f"Practitioner/{b}"), p2, doc2, bin2)


def test_another_patients_consent_naming_the_case_shares_nothing(client, as_user):
    """The consent must be the document's patient's: a Consent of another patient (who has
    documents too) naming this patient's case does not share it."""
    a = new_id("prac")
    p1, doc1, bin1 = _case_with_document(client, _claim(provider={"reference": f"Practitioner/{a}"}))
    ref = client.get(f"/fhir/DocumentReference/{doc1}").json()["context"]["related"][0]["reference"]
    cid = client.get("/fhir/Consent", params={"patient": f"Patient/{p1}"}).json()["entry"][0]["resource"]["id"]
    client.delete(f"/fhir/Consent/{cid}")
    assert not _sees(as_user(f"Practitioner/{a}"), p1, doc1, bin1)
    p2, _doc2, _bin2 = _case_with_document(client, _claim(provider={"reference": f"Practitioner/{new_id('prac')}"}))
    consent(client, p2, {"type": "permit", "period": {"start": "2026-01-01"},
                         "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PAT"}]},
                                    "reference": {"reference": f"Patient/{p2}"}}],
                         "data": [{"meaning": "related", "reference": {"reference": ref}}]})
    assert not _sees(as_user(f"Practitioner/{a}"), p1, doc1, bin1)
