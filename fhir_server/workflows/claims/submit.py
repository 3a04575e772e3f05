"""Claim/$submit: store the Claim and adjudicate it in one transaction.

http://hl7.org/fhir/R4/claim-operation-submit.html. By `Claim.use`:

- preauthorization (a new case): adjudicated with the insurer's policy
  (`policy.py`); the ClaimResponse says complete/partial with `preAuthRef`,
  `preAuthPeriod` and the approved count per item, and a payment guarantee
  PDF is put in the case. Items outside the policy: queued for a case handler.
- preauthorization with `related.claim` -> an earlier preauthorization and
  relationship `prior`: a request for more treatment, always queued (outcome
  `queued`) with a Task for the insurer's case team.
- claim (reimbursement): each `supportingInfo.valueReference` to a
  DocumentReference is checked (exists, same patient, in the case named by
  `related.claim`); queued with a Task for the bills team; the handler's
  ClaimResponse carries `payment`.
- predetermination: queued for a case handler.

Errors: 422 for a claim the workflow cannot take (no patient or insurer, a
prior claim that is not this patient's preauthorization, a bill that is not
in the case); nothing is written then.
"""

from __future__ import annotations

from ...errors import FhirError
from ...rest import interactions as ix
from . import notify, records
from .adjudication import adjudicate_preauthorization
from .guarantee import issue_guarantee
from .policy import Policy, policy_book
from .responses import claim_response, handler_task, new_pre_auth_ref, pre_auth_period

RELATED_PRIOR = "prior"


def insurer_of(conn, claim: dict) -> tuple[dict, list[str]]:
    """(ClaimResponse.insurer reference, the keys a policy may match: references and system|value identifiers)."""
    candidates = []
    if isinstance(claim.get("insurer"), dict):
        candidates.append(claim["insurer"])
    for ins in claim.get("insurance") or []:
        coverage = records.read(conn, records.ref_of(ins.get("coverage")))
        if coverage:
            candidates.extend(p for p in coverage.get("payor") or [] if isinstance(p, dict))
    if not candidates:
        raise FhirError.of(422, "required", "The claim names no insurer (Claim.insurer, or a Coverage with a payor)", "Claim.insurer")
    keys: list[str] = []
    for ref in candidates:
        idents = [ref.get("identifier")] if isinstance(ref.get("identifier"), dict) else []
        if records.ref_of(ref):
            keys.append(ref["reference"])
            target = records.read(conn, ref["reference"])
            idents.extend((target or {}).get("identifier") or [])
        keys.extend(f"{i.get('system')}|{i.get('value')}" for i in idents if isinstance(i, dict))
    return candidates[0], keys


def coverage_keys(conn, claim: dict) -> list[str]:
    """The keys a Coverage-specific policy may match, for each Coverage of `claim.insurance`:
    `Coverage/<id>`, its identifiers `system|value`, its classes `class:<type code>|<value>`."""
    keys: list[str] = []
    for ins in claim.get("insurance") or []:
        ref = records.ref_of(ins.get("coverage")) if isinstance(ins, dict) else None
        coverage = records.read(conn, ref) if ref else None
        if not coverage:
            continue
        keys.append(f"Coverage/{coverage.get('id') or ref.split('/')[-1]}")
        keys.extend(f"{i.get('system')}|{i.get('value')}" for i in coverage.get("identifier") or [] if isinstance(i, dict))
        for cls in coverage.get("class") or []:
            if not isinstance(cls, dict):
                continue
            for coding in (cls.get("type") or {}).get("coding") or []:
                if isinstance(coding, dict) and coding.get("code"):
                    keys.append(f"class:{coding['code']}|{cls.get('value')}")
    return keys


def _prior_claim(claim: dict) -> str | None:
    for rel in claim.get("related") or []:
        codes = {c.get("code") for c in (rel.get("relationship") or {}).get("coding") or []}
        if RELATED_PRIOR in codes and records.ref_of(rel.get("claim")):
            return rel["claim"]["reference"]
    return None


def case_claim(claim: dict) -> str | None:
    for rel in claim.get("related") or []:
        if records.ref_of(rel.get("claim")):
            return rel["claim"]["reference"]
    return None


def _same_patient(a: dict | None, b: dict | None) -> bool:
    return bool(records.ref_of(a)) and records.ref_of(a) == records.ref_of(b)


def _owner(team: str, insurer: dict) -> dict | None:
    if team:
        return {"reference": team}
    return insurer if records.ref_of(insurer) or insurer.get("identifier") else None


def submit(conn, ctx, parsed: ix.ParsedResource, book_path: str | None = None) -> dict:
    """Store the Claim and its ClaimResponse (and Task / guarantee); returns the ClaimResponse."""
    claim_in = parsed.plain
    if claim_in.get("status") != "active":
        raise FhirError.of(422, "business-rule", f"Only an active claim is submitted (Claim.status is '{claim_in.get('status')}')", "Claim.status")
    if not records.ref_of(claim_in.get("patient")):
        raise FhirError.of(422, "required", "Claim.patient must reference the Patient", "Claim.patient")
    seen: set = set()
    for n, item in enumerate(claim_in.get("item") or []):
        if item.get("sequence") in seen:  # R4: the sequence identifies the item (decisions name it)
            raise FhirError.of(422, "business-rule", f"Claim.item[{n}].sequence {item.get('sequence')} is used by an earlier item",
                               f"Claim.item[{n}].sequence")
        seen.add(item.get("sequence"))
    for doc in (parsed.plain, parsed.preserving):
        meta = doc.setdefault("meta", {})
        tags = [t for t in meta.get("tag") or [] if t != records.WORKFLOW_TAG]
        meta["tag"] = tags + [records.WORKFLOW_TAG]
    insurer, keys = insurer_of(conn, claim_in)
    policy = policy_book(book_path).for_claim(coverage_keys(conn, claim_in), keys)
    use = claim_in.get("use")
    prior_ref = _prior_claim(claim_in) if use == "preauthorization" else None
    if prior_ref:
        _check_prior(conn, claim_in, prior_ref)
    if use == "claim":
        case_ref = _check_bills(conn, claim_in)
    out = ix.create(conn, ctx, "Claim", parsed)
    claim = {**parsed.plain, "id": out.res_id}
    wctx = records.workflow_ctx(ctx.base_url)
    claim_ref = f"Claim/{claim['id']}"
    tag = records.WORKFLOW_TAG

    if use == "preauthorization" and not prior_ref:
        decision = adjudicate_preauthorization(claim, policy)
        if decision.outcome == "queued":
            return _queue(conn, wctx, claim, insurer, policy.case_team, decision.disposition, decision)
        pre_auth = (new_pre_auth_ref(), pre_auth_period(policy.approval_valid_days))
        response = records.create(conn, wctx, claim_response(claim, insurer, decision.outcome, decision.disposition, decision, pre_auth, tag))
        guarantee = issue_guarantee(conn, wctx, claim, response, policy, claim_ref)
        notify.notify_patient(conn, notify.ClaimEvent(
            records.ref_of(claim["patient"]), "claim-approved", claim_ref, f"ClaimResponse/{response['id']}",
            f"DocumentReference/{guarantee['id']}", f"{decision.approved_total} treatments approved ({pre_auth[0]})",
        ))
        return response
    if use == "preauthorization":
        return _queue(conn, wctx, claim, insurer, policy.case_team, "Request for more treatment: queued for a case handler")
    if use == "claim":
        return _queue(conn, wctx, claim, insurer, policy.bills_team, f"Reimbursement of uploaded bills in {case_ref}: queued", due_days=policy.reimbursement_days)
    return _queue(conn, wctx, claim, insurer, policy.case_team, "Predetermination: queued for a case handler")


def _queue(conn, wctx, claim, insurer, team: str, disposition: str, decision=None, due_days: int | None = None) -> dict:
    tag = records.WORKFLOW_TAG
    response = records.create(conn, wctx, claim_response(claim, insurer, "queued", disposition, decision, None, tag))
    records.create(conn, wctx, handler_task(claim, _owner(team, insurer), disposition, due_days, tag))
    claim_ref = f"Claim/{claim['id']}"
    notify.notify_patient(conn, notify.ClaimEvent(
        records.ref_of(claim["patient"]), "claim-queued", claim_ref, f"ClaimResponse/{response['id']}", None, disposition,
    ))
    return response


def _check_prior(conn, claim: dict, prior_ref: str) -> None:
    prior = records.read(conn, prior_ref)
    where = "Claim.related.claim"
    if prior is None:
        raise FhirError.of(422, "not-found", f"The prior claim {prior_ref} does not exist", where)
    if not _same_patient(prior.get("patient"), claim.get("patient")):
        raise FhirError.of(422, "business-rule", f"The prior claim {prior_ref} is another patient's", where)
    if prior.get("use") != "preauthorization" or not records.has_workflow_tag(prior):
        raise FhirError.of(422, "business-rule", f"{prior_ref} is not a pre-authorisation submitted here: more treatment is asked for on one", where)


def _check_bills(conn, claim: dict) -> str:
    """The case reference; every supporting document must exist, be the patient's and be in the case."""
    case_ref = case_claim(claim)
    if not case_ref:
        raise FhirError.of(422, "required", "A reimbursement names its case in Claim.related.claim", "Claim.related")
    case = records.read(conn, case_ref)
    if case is None or not _same_patient(case.get("patient"), claim.get("patient")):
        raise FhirError.of(422, "business-rule", f"The case {case_ref} does not exist or is another patient's", "Claim.related.claim")
    docs = 0
    for n, info in enumerate(claim.get("supportingInfo") or []):
        where = f"Claim.supportingInfo[{n}].valueReference"
        ref = records.ref_of(info.get("valueReference"))
        if ref is None:
            continue
        target = records.split_ref(ref)
        doc = records.read(conn, ref)
        if target is None or target[0] != "DocumentReference" or doc is None \
                or not _same_patient(doc.get("subject"), claim.get("patient")):
            # one answer for "missing" and "another patient's": the caller learns nothing of others' documents
            raise FhirError.of(422, "not-found", f"{ref} is not an uploaded document (a DocumentReference) of "
                               f"{records.ref_of(claim.get('patient'))} on this server", where)
        related = {records.ref_of(r) for r in (doc.get("context") or {}).get("related") or []}
        if case_ref not in related:
            raise FhirError.of(422, "business-rule", f"{ref} is not in the case {case_ref} (DocumentReference.context.related)", where)
        docs += 1
    if docs == 0:
        raise FhirError.of(422, "required", "A reimbursement needs the bills: Claim.supportingInfo.valueReference to their DocumentReferences", "Claim.supportingInfo")
    return case_ref


def policy_for_claim(conn, claim: dict, book_path: str | None = None) -> Policy:
    _insurer, keys = insurer_of(conn, claim)
    return policy_book(book_path).for_claim(coverage_keys(conn, claim), keys)
