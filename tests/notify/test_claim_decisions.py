"""Claim decisions reach the patient through the notifier: a real SMTP server
(aiosmtpd) and the SMS gateway receive each message once, in the patient's
language, and a refused claim sends nothing."""

from __future__ import annotations

import uuid

from fhir_server.jobs.runner import run_pending
from tests.workflows.booking.helpers import make_patient
from tests.workflows.claims_journey import claim, decision, eligible_items, submit_params, treatment


def _make(client, resource: dict) -> str:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return f"{resource['resourceType']}/{r.json()['id']}"


def _requests(client, patient: str) -> list[dict]:
    bundle = client.get("/fhir/CommunicationRequest", params={"patient": patient, "category": "claim-decision", "_count": "50"}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_claim_decisions_are_mailed_and_texted_in_danish_once(client, app, notify_settings, smtp_server, sms_gateway):
    mail, phone = f"p{uuid.uuid4().hex[:10]}@example.dk", f"+45{uuid.uuid4().int % 10**8:08d}"
    patient = "Patient/" + make_patient(client, email=mail, phone=phone, language="da-DK")["id"]
    insurer = _make(client, {"resourceType": "Organization", "name": "Tryg Sundhed"})
    coverage = _make(client, {"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": patient}, "payor": [{"reference": insurer}]})

    # approved at once (3 treatments) ...
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment()])))
    assert r.status_code == 200 and r.json()["outcome"] == "complete", r.text
    first_claim, first_response = r.json()["request"]["reference"], f"ClaimResponse/{r.json()['id']}"
    # ... a treatment outside the policy is queued, then decided by a case handler
    r = client.post("/fhir/Claim/$submit", json=submit_params(claim(patient, coverage, insurer, items=[treatment("tandbehandling")])))
    assert r.json()["outcome"] == "queued", r.text
    queued_claim, queued_response = r.json()["request"]["reference"], f"ClaimResponse/{r.json()['id']}"
    decided = _make(client, decision(queued_claim.split("/")[1], patient, insurer, "preauthorization", item=eligible_items(2)))
    # a refused submission (a prior claim that does not exist) queues nothing
    bad = claim(patient, coverage, insurer, items=[treatment()], related=[{"claim": {"reference": "Claim/nope"}, "relationship": {"coding": [{"code": "prior"}]}}])
    assert client.post("/fhir/Claim/$submit", json=submit_params(bad)).status_code == 422

    requests = _requests(client, patient)
    assert sorted(cr["about"][0]["reference"] for cr in requests) == sorted([first_response, queued_response, decided])
    assert {cr["language"] for cr in requests} == {"da"}
    assert not smtp_server.to(mail)  # queued in the write's transaction, sent by the worker

    run_pending(app.state.db, notify_settings, kinds=["notify.send"])
    mails = smtp_server.to(mail)
    assert len(mails) == 3
    by_claim: dict[str, list[str]] = {}
    for msg in mails:
        assert msg["Subject"].startswith("Nyt i din sag ")
        by_claim.setdefault(msg["Subject"].rsplit(" ", 1)[-1], []).append(msg.get_content())
    assert len(by_claim[first_claim.split("/")[1]]) == 1 and "godkendt" in by_claim[first_claim.split("/")[1]][0]
    queued_texts = sorted(by_claim[queued_claim.split("/")[1]])
    assert len(queued_texts) == 2
    assert any("modtaget og venter på sagsbehandling" in t for t in queued_texts)
    assert any("godkendt" in t for t in queued_texts)
    texts = sorted(s["body"]["message"] for s in sms_gateway.to(phone))
    assert len(texts) == 3 and all(t.startswith("Sag ") for t in texts)

    comms = client.get("/fhir/Communication", params={"patient": patient, "_count": "50"}).json()
    sent = [e["resource"] for e in comms.get("entry", [])]
    assert len(sent) == 6 and {c["status"] for c in sent} == {"completed"}
    # the worker again: nothing is sent twice
    run_pending(app.state.db, notify_settings, kinds=["notify.send"])
    assert len(smtp_server.to(mail)) == 3 and len(sms_gateway.to(phone)) == 3
