"""SEAM for the case consent (issue 13): may this caller see a case's documents?

A document belongs to a case when its DocumentReference has `context.related`
pointing at a Claim, EpisodeOfCare or Encounter. A proxy (power of attorney,
parent of a 15-17 year old) may see a case's documents only while the patient's
consent for that case is active. Until the consent module lands this answers
yes for everyone; it is called where case documents are served (the raw
Binary download, through its securityContext), and the consent work is
expected to replace `may_see_case_documents` and to add the same rule as a
search criterion for DocumentReference searches (access is a criterion, not a
filter afterwards: DESIGN.md).
"""

from __future__ import annotations

from ..security.authz import Principal

CASE_TYPES = ("Claim", "EpisodeOfCare", "Encounter")


def cases_of(document_reference: dict) -> list[str]:
    """The case references ("Claim/1", ...) of a DocumentReference's context.related."""
    out = []
    for rel in ((document_reference.get("context") or {}).get("related") or []):
        ref = rel.get("reference") if isinstance(rel, dict) else None
        if isinstance(ref, str) and ref.split("/")[0] in CASE_TYPES:
            out.append(ref)
    return out


def may_see_case_documents(principal: Principal, cases: list[str]) -> bool:
    """True when `principal` may see documents of all `cases` (today: always)."""
    return True
