"""Per-case consent for documents (security/case_consent.py): a case's documents reach
its handlers (staff) only while the patient's consent for the case is in force; uploads
without it are accepted and tagged waiting for consent; backend clients always see them."""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient

from fhir_server.security.case_consent import TAG_SYSTEM
from tests.document_fixtures import pdf_bytes

from .family import consent, new_id, patient, put

INSURER = "Organization/insurer-1"


def _tags(doc: dict) -> set[str]:
    return {t["code"] for t in (doc.get("meta") or {}).get("tag") or [] if t.get("system") == TAG_SYSTEM}


def _case_document(client, child: str, claim: str) -> tuple[str, dict]:
    doc_id = new_id("doc")
    r = client.post("/fhir/Binary", content=pdf_bytes("Regning 1"), headers={"Content-Type": "application/pdf", "X-Security-Context": f"DocumentReference/{doc_id}"})
    assert r.status_code == 201, r.text
    binary = r.json()["id"] if r.content else r.headers["location"].split("/")[-3]
    doc = {"resourceType": "DocumentReference", "id": doc_id, "status": "current", "subject": {"reference": f"Patient/{child}"},
           "content": [{"attachment": {"contentType": "application/pdf", "url": f"Binary/{binary}"}}],
           "context": {"related": [{"reference": f"Claim/{claim}"}]}}
    return binary, put(client, doc)


def test_case_documents_follow_the_case_consent(app, client, issue_token):
    child, _ = patient(client, "DK", date(1990, 6, 6))
    claim = new_id("claim")
    binary, doc = _case_document(client, child, claim)
    assert _tags(doc) == {"waiting-for-consent"}  # accepted, and marked
    found = client.get("/fhir/DocumentReference", params={"_tag": f"{TAG_SYSTEM}|waiting-for-consent", "_id": doc["id"]}).json()
    assert found["total"] == 1 if "total" in found else len(found["entry"]) == 1

    put(client, {"resourceType": "PractitionerRole", "id": "role-handler-1", "active": True,  # a caseworker of INSURER
                 "practitioner": {"reference": "Practitioner/handler-1"}, "organization": {"reference": INSURER}})
    staff_token = issue_token(scope="user/*.rs", fhir_user="Practitioner/handler-1")
    staff = TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {staff_token}", "Accept": "application/pdf"})
    try:
        r = staff.get(f"/fhir/Binary/{binary}")
        assert r.status_code == 404  # as invisible as its DocumentReference
        assert staff.get(f"/fhir/Binary/{binary}", headers={"Accept": "application/fhir+json"}).status_code == 404
        assert staff.get(f"/fhir/Binary/{binary}", params={"_summary": "false"}, headers={"Accept": "application/fhir+json"}).status_code == 404
        assert client.get(f"/fhir/Binary/{binary}", headers={"Accept": "application/pdf"}).status_code == 200  # backend client

        provision = {"type": "permit", "period": {"start": "2026-01-01"},
                     "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                                "reference": {"reference": INSURER}}],
                     "data": [{"meaning": "related", "reference": {"reference": f"Claim/{claim}"}}]}
        cid = consent(client, child, provision)
        r = staff.get(f"/fhir/Binary/{binary}")
        assert r.status_code == 200 and r.content.startswith(b"%PDF")
        # written again now: no longer waiting
        assert _tags(put(client, {k: v for k, v in doc.items() if k != "meta"})) == set()

        # withdrawn: not shared any more, from the next request on
        consent(client, child, provision, status="inactive", cid=cid)
        assert staff.get(f"/fhir/Binary/{binary}").status_code == 404
        # a document of another case was never shared
        other_binary, other = _case_document(client, child, new_id("claim"))
        assert _tags(other) == {"waiting-for-consent"}
        assert staff.get(f"/fhir/Binary/{other_binary}").status_code == 404
    finally:
        staff.close()
