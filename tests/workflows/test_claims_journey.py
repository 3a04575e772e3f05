"""The Danish health-insurance journey over HTTP, on a real server (uvicorn), with real
tokens: the patient's portal (a patient/ token) files the injury claim, downloads the
payment guarantee PDF (read with pdftotext), asks for more treatment, uploads a bill and
claims reimbursement; the insurer's case handler (a backend system token) decides."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from fhir_server.workflows.claims import notify
from tests.conftest import make_token
from tests.document_fixtures import pdf_bytes
from tests.workflows.claims_journey import approved, claim, decision, eligible_items, submit_params, treatment

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")


@pytest.fixture
def http(live_server, auth_headers):
    with httpx.Client(base_url=live_server, headers=auth_headers, timeout=60) as c:
        yield c


@pytest.fixture
def events():
    seen: list[notify.ClaimEvent] = []
    remove = notify.listen(lambda _conn, e: seen.append(e))
    yield seen
    remove()


def _create(http, resource: dict) -> str:
    r = http.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _pdf_text(data: bytes, tmp_path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True).stdout


def _guarantees(http, case_id: str) -> list[dict]:
    bundle = http.get("/DocumentReference", params={"related": f"Claim/{case_id}", "type": "payment-guarantee", "_sort": "date"}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_danish_journey(http, live_server, events, tmp_path):
    insurer = _create(http, {"resourceType": "Organization", "name": "Dansk Sundhedsforsikring A/S"})
    patient = _create(http, {"resourceType": "Patient", "name": [{"family": "Jørgensen", "given": ["Søren"]}], "birthDate": "1988-04-12"})
    coverage = _create(http, {"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": f"Patient/{patient}"},
                              "payor": [{"reference": f"Organization/{insurer}"}]})
    P, C, I = f"Patient/{patient}", f"Coverage/{coverage}", f"Organization/{insurer}"
    portal = httpx.Client(base_url=live_server, timeout=60,
                          headers={"Authorization": f"Bearer {make_token('patient/*.cruds', patient=patient)}"})

    # 1. The injury claim (filed in the patient's portal): 3 physiotherapy treatments approved at once,
    # with a payment guarantee the patient downloads.
    r = portal.post("/Claim/$submit", json=submit_params(claim(P, C, I, items=[treatment("fysioterapi")])))
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["resourceType"] == "ClaimResponse"
    assert first["outcome"] == "complete"
    assert approved(first) == [3]
    assert first["preAuthRef"].startswith("PA-")
    assert first["preAuthPeriod"]["start"] < first["preAuthPeriod"]["end"]
    case_id = first["request"]["reference"].split("/")[1]
    assert http.get(f"/ClaimResponse/{first['id']}").json()["preAuthRef"] == first["preAuthRef"]  # stored, same transaction

    [guarantee] = _guarantees(portal, case_id)
    att = guarantee["content"][0]["attachment"]
    assert guarantee["subject"]["reference"] == P
    pdf = portal.get(f"/{att['url']}", headers={"Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert len(pdf.content) == att["size"]
    text = _pdf_text(pdf.content, tmp_path)
    for expected in ("Betalingsgaranti", "Dansk Sundhedsforsikring A/S", "Søren Jørgensen", first["preAuthRef"],
                     "Fysioterapi: 3 behandlinger", first["preAuthPeriod"]["start"], first["preAuthPeriod"]["end"]):
        assert expected in text, (expected, text)

    # 2. More treatment asked for online: queued for a case handler, with a Task.
    more = claim(P, C, I, items=[treatment("fysioterapi", 3)], related=[{
        "claim": {"reference": f"Claim/{case_id}"},
        "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship", "code": "prior"}]},
    }])
    r = portal.post("/Claim/$submit", json=submit_params(more))
    assert r.status_code == 200, r.text
    queued = r.json()
    assert queued["outcome"] == "queued" and "preAuthRef" not in queued
    more_id = queued["request"]["reference"].split("/")[1]
    [task] = http.get("/Task", params={"focus": f"Claim/{more_id}"}).json()["entry"]
    assert task["resource"]["status"] == "requested"
    assert task["resource"]["owner"]["reference"] == I

    # 3. Invalid decisions are refused and change nothing.
    bad = [
        # outside the required value set: refused by the generic binding check (terminology module, 422: a well-formed resource with a code outside its required binding)
        (decision(more_id, P, I, "preauthorization", "approved-ish", item=eligible_items(3)), 422),
        # valid codes, but not a decision the workflow can act on: 422
        (decision(more_id, P, I, "preauthorization", "queued", item=eligible_items(3)), 422),
        (decision(more_id, "Patient/someone-else", I, "preauthorization", item=eligible_items(3)), 422),
        (decision(more_id, P, I, "claim", item=eligible_items(3)), 422),
        (decision(more_id, P, I, "preauthorization"), 422),  # no approved count
    ]
    for body, status in bad:
        r = http.post("/ClaimResponse", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
        if body["outcome"] == "approved-ish":
            assert r.json()["issue"][0]["expression"] == ["ClaimResponse.outcome"]
    assert http.get(f"/Task/{task['resource']['id']}").json()["status"] == "requested"

    # 4. The case handler approves 3 more: the Task closes, a second guarantee lands in the case.
    r = http.post("/ClaimResponse", json=decision(more_id, P, I, "preauthorization", item=eligible_items(3)))
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["preAuthRef"].startswith("PA-") and second["preAuthPeriod"]["end"]
    done = http.get(f"/Task/{task['resource']['id']}").json()
    assert done["status"] == "completed"
    assert done["output"][0]["valueReference"]["reference"] == f"ClaimResponse/{second['id']}"
    guarantees = _guarantees(http, case_id)
    assert len(guarantees) == 2
    newest = next(g for g in guarantees if second["preAuthRef"] in g["description"])
    text = _pdf_text(http.get(f"/{newest['content'][0]['attachment']['url']}").content, tmp_path)
    assert second["preAuthRef"] in text and "3 behandlinger" in text

    # 5. A bill is uploaded (raw PDF) into the case and reimbursement is claimed.
    bill_pdf = pdf_bytes("Faktura 2026-118", "Fysioterapi 3 x 550 kr", "I alt 1650,00 DKK")
    r = portal.post("/Binary", content=bill_pdf, headers={"Content-Type": "application/pdf", "X-Security-Context": P})
    assert r.status_code == 201, r.text
    bill_binary = r.headers["location"].split("/Binary/")[1].split("/")[0]
    bill_doc = _create(portal, {
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": P},
        "type": {"text": "Regning"}, "date": "2026-03-20T12:00:00Z",
        "context": {"related": [{"reference": f"Claim/{case_id}"}]},
        "content": [{"attachment": {"url": f"Binary/{bill_binary}", "title": "faktura.pdf"}}],
    })
    stray_doc = _create(portal, {
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": P},
        "content": [{"attachment": {"url": f"Binary/{bill_binary}"}}],
    })
    related_case = [{"claim": {"reference": f"Claim/{case_id}"},
                     "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship", "code": "associated"}]}}]

    def reimbursement(doc_id: str) -> dict:
        return claim(P, C, I, use="claim", related=related_case, supportingInfo=[{
            "sequence": 1, "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claiminformationcategory", "code": "attachment"}]},
            "valueReference": {"reference": f"DocumentReference/{doc_id}"},
        }], total={"value": 1650.00, "currency": "DKK"})

    for doc_id in (stray_doc, "missing-document"):
        r = portal.post("/Claim/$submit", json=submit_params(reimbursement(doc_id)))
        assert r.status_code == 422, r.text
    r = portal.post("/Claim/$submit", json=submit_params(reimbursement(bill_doc)))
    assert r.status_code == 200, r.text
    refund = r.json()
    assert refund["outcome"] == "queued"
    refund_claim = refund["request"]["reference"].split("/")[1]
    [bills_task] = http.get("/Task", params={"focus": f"Claim/{refund_claim}"}).json()["entry"]
    assert bills_task["resource"]["restriction"]["period"]["end"]  # within the promised two weeks

    # 6. Paid: the decision must carry the payment.
    r = http.post("/ClaimResponse", json=decision(refund_claim, P, I, "claim"))
    assert r.status_code == 422
    paid = decision(refund_claim, P, I, "claim", payment={
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-paymenttype", "code": "complete"}]},
        "date": "2026-03-28", "amount": {"value": 1650.00, "currency": "DKK"},
    })
    r = http.post("/ClaimResponse", json=paid)
    assert r.status_code == 201, r.text
    assert r.json()["payment"]["amount"]["value"] == 1650.00
    assert http.get(f"/Task/{bills_task['resource']['id']}").json()["status"] == "completed"

    # The patient cannot decide their own claim, and sees the decision in their record.
    assert portal.post("/ClaimResponse", json=paid).status_code == 403
    assert portal.get(f"/ClaimResponse/{r.json()['id']}").status_code == 200
    portal.close()

    # The patient was told at every step.
    mine = [e for e in events if e.patient == P]
    assert [e.event for e in mine] == ["claim-approved", "claim-queued", "claim-approved", "claim-queued", "reimbursement-paid"]
    assert mine[0].document == f"DocumentReference/{guarantee['id']}"
