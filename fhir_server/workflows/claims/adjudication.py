"""Adjudicating a pre-authorisation with a policy: a pure function of the Claim.

Every item whose Claim.item.productOrService the policy covers is approved for
at most `initial_treatments` (Claim.item.quantity is the number asked for;
absent, the initial number). Outcome (R4 ClaimResponse.outcome,
http://hl7.org/fhir/ValueSet/remittance-outcome):

- complete: every item approved as asked;
- partial:  every item covered, some approved for fewer treatments than asked;
- queued:   an item the policy does not cover, or no items: a person decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from .policy import Policy


@dataclass(frozen=True)
class ItemDecision:
    sequence: int
    coding: dict | None  # the covered coding, None when not covered
    requested: int
    approved: int


@dataclass(frozen=True)
class Decision:
    outcome: str  # complete | partial | queued
    items: tuple[ItemDecision, ...]
    disposition: str

    @property
    def approved_total(self) -> int:
        return sum(i.approved for i in self.items)


def requested_quantity(item: dict, default: int) -> int:
    value = (item.get("quantity") or {}).get("value")
    if isinstance(value, (int, float)) and value >= 1:
        return int(value)
    return default


def adjudicate_preauthorization(claim: dict, policy: Policy) -> Decision:
    items = []
    for n, item in enumerate(claim.get("item") or [], start=1):
        codings = (item.get("productOrService") or {}).get("coding") or []
        covered = next((c for c in codings if policy.covers(c)), None)
        requested = requested_quantity(item, policy.initial_treatments)
        approved = min(requested, policy.initial_treatments) if covered else 0
        items.append(ItemDecision(int(item.get("sequence") or n), covered, requested, approved))
    if not items:
        return Decision("queued", (), "No treatment was named: the request is queued for a case handler")
    if any(i.coding is None for i in items):
        return Decision("queued", tuple(items), "A treatment outside the policy was asked for: the request is queued for a case handler")
    if all(i.approved == i.requested for i in items):
        return Decision("complete", tuple(items), "Approved")
    return Decision("partial", tuple(items), f"Approved for {policy.initial_treatments} treatments at first; more can be requested")
