"""Per-case consent ("sagsbaseret samtykke"): may this caller see a case's documents?

A document belongs to a case when its DocumentReference has `context.related` (or
`context.encounter`) pointing at a case resource (Claim, EpisodeOfCare, Encounter,
CarePlan: mappings/consent/proxy_policy.yaml `case_types`). A case's documents are shared
while the patient's consent for the case is in force: a Consent of the patient, `active`,
its period covering now, with a permit provision whose `data` names the case (the Danish
portal's consent to collect and share data for a case; one year by default, revocable).

Who sees a case's documents (`may_see_case_documents`):
- the patient themselves, and backend (`system/`) clients: always;
- a proxy acting for the patient (security.acting): as their ActingGrant allows (a guardian
  of a minor, a full proxy, or a proxy for that case), evaluated now;
- staff (a `user/` token of a Practitioner/PractitionerRole): only the case's handlers
  (search.case_access: named by the case resource, owner of a Task of the case, or, when the
  consent names staff actors, only those) and only while a case consent is in force for
  every case of the document.

Staff see neither the DocumentReference nor its content without the case consent, on
every path (read, search, _include/_revinclude, $everything, history): `staff_criteria`
adds the "case-consent" rule at the seam (security.authz), compiled into SQL by
search.case_access over the table of security.case_grants.

Uploads without a case consent are still accepted: `mark_waiting` (a DocumentReference
preparer) tags such a DocumentReference `meta.tag` = WAITING_TAG ("waiting for consent"),
and removes the tag when the document is written again once the consent is in force.
"""

from __future__ import annotations

from sqlalchemy import Connection

from ..security.authz import Criteria, Principal, Visibility
from . import case_grants
from .case_grants import CASE_TYPES
TAG_SYSTEM = "http://fhir-server.example/CodeSystem/case-consent"
WAITING_TAG = {"system": TAG_SYSTEM, "code": "waiting-for-consent", "display": "Waiting for the patient's consent for the case"}


def cases_of(document_reference: dict) -> list[str]:
    """The case references ("Claim/1", ...) of a DocumentReference's context.related / encounter."""
    out = []
    context = document_reference.get("context") or {}
    refs = list(context.get("related") or []) + list(context.get("encounter") or [])
    for rel in refs:
        ref = rel.get("reference") if isinstance(rel, dict) else None
        if isinstance(ref, str) and "/" in ref:
            ref = "/".join(ref.split("/")[-2:])
            if ref.split("/")[0] in CASE_TYPES and ref not in out:
                out.append(ref)
    return out


def patient_of(document_reference: dict) -> str | None:
    ref = (document_reference.get("subject") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("Patient/"):
        return ref.split("/", 1)[1]
    return None


def consented_cases(conn: Connection, patient_id: str, cases: list[str]) -> set[str]:
    """Those of `cases` for which a Consent of Patient/`patient_id` in force permits sharing
    now (and none denies it): security.case_grants, the table the searches read too."""
    return case_grants.consented_cases(conn, patient_id, cases)


def staff_criteria(principal: Principal, res_type: str) -> Visibility:
    """The criteria (AND-ed at the seam) under which staff see `res_type`: for
    DocumentReference, the "case-consent" rule (search.case_access); else no restriction.
    The patient, proxies (their grant's own criteria) and backend clients: none."""
    if res_type not in ("DocumentReference", "Binary") or principal.unrestricted or principal.acting is not None \
            or not _is_staff(principal):
        return None
    return [Criteria(conditions=(f"case-consent:{staff_member(principal) or ''}",))]


def staff_member(principal: Principal) -> str | None:
    """The staff member a token stands for: its fhirUser ("Practitioner/9",
    "PractitionerRole/4"; an absolute URL is cut to its last two segments); None for none."""
    user = principal.fhir_user or ""
    ref = "/".join(user.rstrip("/").split("/")[-2:])
    return ref if ref.startswith(("Practitioner/", "PractitionerRole/")) and ref.count("/") == 1 else None


def _is_staff(principal: Principal) -> bool:
    user = principal.fhir_user or ""
    return user.startswith(("Practitioner/", "PractitionerRole/")) or (
        not user and any(s.startswith("user/") for s in principal.scopes) and not any(s.startswith("system/") for s in principal.scopes))


def may_see_case_documents(principal: Principal, cases: list[str], conn: Connection | None = None, document: dict | None = None) -> bool:
    """True when `principal` may see documents of all `cases` (see the module docstring)."""
    if principal.unrestricted or not cases:
        return True
    grant = principal.acting
    if grant is not None:
        from .proxies import ActingGrant

        if not isinstance(grant, ActingGrant) or not grant.allowed:
            return False
        if grant.full:
            return not any(c in grant.denied for c in cases)
        return all(c in grant.items and c not in grant.denied for c in cases)
    if not _is_staff(principal):
        return True  # the patient themselves (their compartment) or a backend client
    doc_id = (document or {}).get("id")
    if conn is None or patient_of(document or {}) is None or not isinstance(doc_id, str):
        return False
    from ..search.access import visible  # the same SQL rule the searches apply (search.case_access)

    return visible(conn, "DocumentReference", doc_id, staff_criteria(principal, "DocumentReference"))


def mark_waiting(conn: Connection, ctx, res_id: str | None, parsed) -> None:
    """DocumentReference preparer: tag documents of a case without a consent in force."""
    doc = parsed.plain
    cases = cases_of(doc)
    patient = patient_of(doc)
    waiting = bool(cases and patient and consented_cases(conn, patient, cases) < set(cases))
    for target in (parsed.plain, parsed.preserving):
        meta = target.get("meta")
        tags = [t for t in ((meta or {}).get("tag") or []) if not (isinstance(t, dict) and t.get("system") == TAG_SYSTEM)]
        if waiting:
            tags.append(dict(WAITING_TAG))
        if tags:
            target.setdefault("meta", {})["tag"] = tags
        elif isinstance(meta, dict) and "tag" in meta:
            del meta["tag"]
