"""Subscription owners, through real tokens: criteria within the owner's access, and
notifications carrying only resources (the very versions) the owner may read."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from fhir_server.subscriptions.tables import subscription_events

from .conftest import r4_subscription, topic_subscription

LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _as(app, token: str) -> TestClient:
    return TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"})


def _patient(client) -> str:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Own" + uuid.uuid4().hex[:6]}]})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _observation(client, patient: str, code: str, category: str = "laboratory") -> dict:
    body = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient}"},
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]}}
    r = client.post("/fhir/Observation", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _subscribe_as(app, token: str, resource: dict, made: list[str], expect: int = 201) -> dict:
    with _as(app, token) as c:
        r = c.post("/fhir/Subscription", json=resource)
    assert r.status_code == expect, r.text
    if expect == 201:
        made.append(r.json()["id"])
    return r.json()


def test_patient_context_owner_hears_only_its_own_patients_resources(app, client, issue_token, receiver, deliver,
                                                                     subscriptions_made):
    """The owner holds `patient/Observation.rs` for P1 (and may manage Subscriptions): an
    Observation of P2 matching the criteria is never queued, P1's is; a deletion is
    judged on the version deleted."""
    p1, p2 = _patient(client), _patient(client)
    code = uuid.uuid4().hex[:10]
    token = issue_token(scope="system/Subscription.cruds patient/Observation.rs", patient=p1,
                        fhir_user="Practitioner/portal-backend")
    sub = _subscribe_as(app, token, r4_subscription(f"Observation?code={LOINC}|{code}", receiver.url,
                                                    payload="application/fhir+json"), subscriptions_made)
    mine = _observation(client, p1, code)
    theirs = _observation(client, p2, code)
    deliver()
    assert [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in receiver.requests] == [("PUT", mine["id"])]
    assert client.delete(f"/fhir/Observation/{theirs['id']}").status_code in (200, 204)
    assert client.delete(f"/fhir/Observation/{mine['id']}").status_code in (200, 204)
    deliver()
    assert [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in receiver.requests] == [
        ("PUT", mine["id"]), ("DELETE", mine["id"])]
    with app.state.db.read() as conn:
        queued = conn.execute(select(subscription_events.c.res_id).where(subscription_events.c.sub_id == sub["id"])).scalars().all()
    assert theirs["id"] not in queued  # never even queued: the check runs in the write's transaction


def test_delivery_rechecks_the_version_the_event_names(app, client, issue_token, receiver, deliver, subscriptions_made):
    """Queued while within reach; by delivery time the resource was moved to another
    patient: the queued version (still P1's) goes out, the later version (P2's) was
    never queued, and the owner reads nothing of P2."""
    p1, p2 = _patient(client), _patient(client)
    code = uuid.uuid4().hex[:10]
    token = issue_token(scope="system/Subscription.cruds patient/Observation.rs", patient=p1,
                        fhir_user="Practitioner/portal-backend")
    _subscribe_as(app, token, r4_subscription(f"Observation?code={LOINC}|{code}", receiver.url,
                                              payload="application/fhir+json"), subscriptions_made)
    obs = _observation(client, p1, code)
    moved = dict(obs, subject={"reference": f"Patient/{p2}"})
    assert client.put(f"/fhir/Observation/{obs['id']}", json=moved).status_code == 200
    deliver()
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    assert [b["subject"]["reference"] for b in bodies] == [f"Patient/{p1}"]
    assert [b["meta"]["versionId"] for b in bodies] == ["1"]


def test_granular_scope_owner_hears_only_matching_resources(app, client, issue_token, receiver, deliver, subscriptions_made):
    """A staff token limited to laboratory Observations: a vital-signs Observation that
    matches the subscription's criteria is not sent."""
    patient = _patient(client)
    code = uuid.uuid4().hex[:10]
    token = issue_token(scope=f"user/Subscription.cruds user/Observation.rs?category={CATEGORY}|laboratory",
                        fhir_user="Practitioner/lab-watcher")
    _subscribe_as(app, token, r4_subscription(f"Observation?code={LOINC}|{code}", receiver.url,
                                              payload="application/fhir+json"), subscriptions_made)
    lab = _observation(client, patient, code, "laboratory")
    _observation(client, patient, code, "vital-signs")
    deliver()
    assert [r["path"].rsplit("/", 1)[-1] for r in receiver.requests] == [lab["id"]]


def test_criteria_outside_the_owners_access_are_refused(app, client, issue_token, receiver, subscriptions_made):
    token = issue_token(scope="user/Subscription.cruds user/Observation.rs", fhir_user="Practitioner/narrow")
    family = "Refused" + uuid.uuid4().hex[:6]
    r = _subscribe_as(app, token, r4_subscription(f"Patient?family={family}", receiver.url), subscriptions_made, expect=403)
    assert r["issue"][0]["code"] == "forbidden" and "Patient" in r["issue"][0]["diagnostics"]
    # a topic watching Appointments, asked for by a token that cannot search Appointments
    r = _subscribe_as(app, token, topic_subscription("appointment-booked", receiver.url), subscriptions_made, expect=403)
    assert "Appointment" in r["issue"][0]["diagnostics"]
    # nothing was written
    assert client.get("/fhir/Subscription", params={"criteria": f"Patient?family={family}"}).json().get("total", 0) == 0
    # within its access: accepted
    _subscribe_as(app, token, r4_subscription("Observation?code=http://loinc.org|1-8", receiver.url), subscriptions_made)


def test_patient_token_cannot_own_subscriptions(app, issue_token, receiver, subscriptions_made):
    """R4's Patient compartment has no Subscription: a patient/ token cannot write one
    (docs/subscriptions.md, "Security")."""
    token = issue_token(scope="patient/*.cruds", patient="someone")
    r = _subscribe_as(app, token, r4_subscription("Observation?code=http://loinc.org|1-8", receiver.url),
                      subscriptions_made, expect=403)
    assert r["issue"][0]["code"] == "forbidden"


def test_staff_owner_hears_of_case_documents_only_under_the_case_consent(app, client, issue_token, receiver, deliver,
                                                                         subscriptions_made):
    """The consent rules of the owner's token (security/case_consent.py): a case handler's
    subscription to a patient's DocumentReferences carries the documents of a case the
    patient consented to, not those of another case; revoking the consent withholds
    what was queued before and not yet sent."""
    from datetime import date

    from tests.security.family import case_claim, consent, new_id, patient, put
    from tests.security.test_case_documents_http import INSURER, case_provision

    pid, _ = patient(client, "DK", date(1990, 6, 6))
    subject = {"reference": f"Patient/{pid}"}
    shared, other = new_id("claim-shared"), new_id("claim-other")
    for claim in (shared, other):
        case_claim(client, claim, subject)
    consent_id = consent(client, pid, case_provision(shared))
    # a caseworker of the insurer the consent names: a handler of the shared case (docs/consent.md)
    put(client, {"resourceType": "PractitionerRole", "id": "role-case-handler-17", "active": True,
                 "practitioner": {"reference": "Practitioner/case-handler-17"}, "organization": {"reference": INSURER}})
    token = issue_token(scope="user/DocumentReference.rs user/Subscription.cruds", fhir_user="Practitioner/case-handler-17")
    _subscribe_as(app, token, r4_subscription(f"DocumentReference?patient={pid}", receiver.url,
                                              payload="application/fhir+json"), subscriptions_made)

    def document(claim: str) -> str:
        return put(client, {"resourceType": "DocumentReference", "id": new_id("doc"), "status": "current", "subject": subject,
                            "content": [{"attachment": {"contentType": "text/plain", "data": "aGVq"}}],
                            "context": {"related": [{"reference": f"Claim/{claim}"}]}})["id"]

    first = document(shared)
    document(other)
    deliver()
    assert [r["path"].rsplit("/", 1)[-1] for r in receiver.requests] == [first]
    document(shared)  # queued while the consent is in force ...
    revoked = client.get(f"/fhir/Consent/{consent_id}").json()
    assert client.put(f"/fhir/Consent/{consent_id}", json=dict(revoked, status="inactive")).status_code == 200
    deliver()  # ... and withheld once it is revoked
    assert [r["path"].rsplit("/", 1)[-1] for r in receiver.requests] == [first]
