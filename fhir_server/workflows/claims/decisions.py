"""A case handler's decision: a ClaimResponse posted for a queued Claim.

Checked in the write (a transform, so it sees the caller): when
`ClaimResponse.request` names a Claim that went through Claim/$submit,

- the caller must not be a patient or their proxy (403): insurers decide;
- `patient` and `use` must be the Claim's (422);
- `outcome` must be a decision: complete | partial | error (422 for `queued`);
  a code outside http://hl7.org/fhir/ValueSet/remittance-outcome (an invented
  `approved-ish`) is refused before this, by the terminology module's
  required-binding check on every ClaimResponse (400);
- the Claim must be waiting for a decision (an open Task): a second decision, or one on a
  Claim approved at once, is a 409;
- an approving pre-authorisation needs the approved count per item
  (`item.adjudication` with category `eligible` and a `value`: a whole number, on an
  `itemSequence` of the Claim); the server
  fills `preAuthRef` and `preAuthPeriod` (the policy's validity) if absent;
- an approving reimbursement needs `payment.amount` and `payment.date`.

After it is stored (a change subscriber, same transaction): the Claim's open
Tasks are completed with the response as output, an approved
pre-authorisation gets its payment guarantee PDF, and the patient is told.
"""

from __future__ import annotations

from ...errors import FhirError
from ...events import ResourceChange
from ...security.authz import Principal
from . import notify, records
from .guarantee import issue_guarantee
from .responses import approved_count, new_pre_auth_ref, pre_auth_period

DECISION_OUTCOMES = ("complete", "partial", "error")
OPEN_TASK_STATES = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")


def is_patient_side(principal: Principal) -> bool:
    """A patient or a patient's proxy (SMART patient/ scopes or a Patient/RelatedPerson fhirUser)."""
    user = str((principal.claims or {}).get("fhirUser") or "")
    if "Patient/" in user or "RelatedPerson/" in user:
        return True
    scopes = set(principal.scopes or ())
    return bool(scopes) and all(s.startswith("patient/") or "/" not in s for s in scopes) and any(s.startswith("patient/") for s in scopes)


def _managed_claim(conn, response: dict) -> dict | None:
    claim = records.read(conn, records.ref_of(response.get("request")))
    if claim is None or records.split_ref(records.ref_of(response.get("request")))[0] != "Claim":
        return None
    return claim if records.has_workflow_tag(claim) else None


def transform_claim_response(conn, ctx, res_type: str, res_id: str | None, parsed) -> None:
    if res_type != "ClaimResponse" or records.is_workflow(ctx):
        return
    doc = parsed.plain
    claim = _managed_claim(conn, doc)
    if claim is None:
        return
    claim_ref = f"Claim/{claim['id']}"
    if ctx is not None and is_patient_side(ctx.principal):
        raise FhirError.of(403, "forbidden", f"Only the insurer's staff decide on {claim_ref}")
    if records.ref_of(doc.get("patient")) != records.ref_of(claim.get("patient")):
        raise FhirError.of(422, "business-rule", f"ClaimResponse.patient must be the patient of {claim_ref} ({records.ref_of(claim.get('patient'))})", "ClaimResponse.patient")
    if doc.get("use") != claim.get("use"):
        raise FhirError.of(422, "business-rule", f"ClaimResponse.use must be the claim's use ({claim.get('use')})", "ClaimResponse.use")
    outcome = doc.get("outcome")
    if outcome not in DECISION_OUTCOMES:
        raise FhirError.of(
            422, "code-invalid",
            f"ClaimResponse.outcome '{outcome}' is not a decision on {claim_ref}: use complete, partial or error "
            "(http://hl7.org/fhir/ValueSet/remittance-outcome)",
            "ClaimResponse.outcome",
        )
    if not _is_stored(conn, res_id):
        _check_waiting(conn, claim_ref)
    if outcome == "error":
        return
    if claim.get("use") == "preauthorization":
        _check_approved_items(claim, doc, claim_ref)
        if sum(approved_count(i) for i in doc.get("item") or []) <= 0:
            raise FhirError.of(
                422, "required",
                "An approval states the approved treatments: item.adjudication with category 'eligible' and the count in value",
                "ClaimResponse.item",
            )
        from .submit import policy_for_claim

        policy = policy_for_claim(conn, claim)
        ref = doc.get("preAuthRef") or new_pre_auth_ref()
        period = doc.get("preAuthPeriod") or pre_auth_period(policy.approval_valid_days)
        for d in (parsed.plain, parsed.preserving):
            d.setdefault("preAuthRef", ref)
            d.setdefault("preAuthPeriod", dict(period))
    elif claim.get("use") == "claim":
        payment = doc.get("payment") or {}
        if not (payment.get("amount") or {}).get("value") or not payment.get("date"):
            raise FhirError.of(422, "required", "A reimbursement decision carries the payment: payment.amount and payment.date", "ClaimResponse.payment")


def _is_stored(conn, res_id: str | None) -> bool:
    from ...storage import repository as repo

    current = repo.read_current(conn, "ClaimResponse", res_id) if res_id else None
    return current is not None and not current.deleted


def _check_waiting(conn, claim_ref: str) -> None:
    """409 unless the Claim waits for a person's decision (an open Task): a Claim approved at
    once by $submit, or already decided, gets no second decision (no second guarantee)."""
    tasks = records.find(conn, "Task", [("focus", claim_ref)])
    if any(t.get("status") in OPEN_TASK_STATES for t in tasks):
        return
    decided = [o["valueReference"]["reference"] for t in tasks for o in t.get("output") or []
               if isinstance(o.get("valueReference"), dict) and o["valueReference"].get("reference")]
    why = f"it was decided by {decided[-1]}" if decided else "it was adjudicated when submitted"
    raise FhirError.of(409, "conflict", f"{claim_ref} is not waiting for a decision: {why}", "ClaimResponse.request")


def _check_approved_items(claim: dict, doc: dict, claim_ref: str) -> None:
    """Each approved item names an item of the Claim; each approved count is a whole number
    from 0 to MAX_TREATMENTS (422 naming the element)."""
    from .adjudication import MAX_TREATMENTS
    from .responses import ADJUDICATION

    sequences = {i.get("sequence") for i in claim.get("item") or [] if isinstance(i, dict)}
    for n, item in enumerate(doc.get("item") or []):
        where = f"ClaimResponse.item[{n}]"
        if item.get("itemSequence") not in sequences:
            raise FhirError.of(422, "business-rule", f"{where}.itemSequence {item.get('itemSequence')} names no item of {claim_ref} "
                               f"(its items: {', '.join(str(s) for s in sorted(x for x in sequences if isinstance(x, int)))})",
                               f"{where}.itemSequence")
        for m, adj in enumerate(item.get("adjudication") or []):
            codes = {(c.get("system"), c.get("code")) for c in (adj.get("category") or {}).get("coding") or []}
            if (ADJUDICATION, "eligible") not in codes or "value" not in adj:
                continue
            value = adj["value"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
                    or not 0 <= value <= MAX_TREATMENTS:
                raise FhirError.of(422, "value", f"The approved number of treatments must be a whole number from 0 to "
                                   f"{MAX_TREATMENTS} (got {value})", f"{where}.adjudication[{m}].value")


def on_claim_response(conn, change: ResourceChange) -> None:
    """Close the Claim's open Tasks; an approved pre-authorisation gets its guarantee; tell the patient."""
    if change.res_type != "ClaimResponse" or change.new is None or change.method not in ("create", "update"):
        return
    response = change.new
    if response.get("outcome") not in DECISION_OUTCOMES:
        return
    claim = _managed_claim(conn, response)
    if claim is None:
        return
    claim_ref = f"Claim/{claim['id']}"
    tasks = [t for t in records.find(conn, "Task", [("focus", claim_ref)]) if t.get("status") in OPEN_TASK_STATES]
    if not tasks:
        return  # not queued for a person (the workflow's own response, or decided before)
    wctx = records.workflow_ctx("")
    response_ref = f"ClaimResponse/{change.res_id}"
    for task in tasks:
        task = {**task, "status": "completed", "output": [{
            "type": {"text": "decision"}, "valueReference": {"reference": response_ref},
        }]}
        records.update(conn, wctx, task)
    document = None
    outcome = response.get("outcome")
    if claim.get("use") == "preauthorization" and outcome in ("complete", "partial"):
        from .submit import case_claim, policy_for_claim

        case_ref = case_claim(claim) or claim_ref
        guarantee = issue_guarantee(conn, wctx, claim, {**response, "id": change.res_id}, policy_for_claim(conn, claim), case_ref)
        document = f"DocumentReference/{guarantee['id']}"
        event, text = "claim-approved", f"{sum(approved_count(i) for i in response.get('item') or [])} more treatments approved ({response.get('preAuthRef')})"
    elif claim.get("use") == "claim" and outcome in ("complete", "partial"):
        pay = response.get("payment") or {}
        amount = pay.get("amount") or {}
        event, text = "reimbursement-paid", f"{amount.get('value')} {amount.get('currency', '')} paid on {pay.get('date')}".strip()
    else:
        event, text = "claim-decided", response.get("disposition") or outcome
    notify.notify_patient(conn, notify.ClaimEvent(records.ref_of(claim.get("patient")), event, claim_ref, response_ref, document, text))
