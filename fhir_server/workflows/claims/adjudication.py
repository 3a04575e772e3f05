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
from decimal import Decimal

from ...errors import FhirError
from .policy import Policy

MAX_TREATMENTS = 2_147_483_647  # FHIR integer range: the count is written back as adjudication values


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


def requested_quantity(item: dict, default: int, where: str = "Claim.item.quantity.value") -> int:
    """The number of treatments asked for: a whole number from 1 up, `default` when absent.

    Anything else (0, negative, fractional, beyond FHIR's integer range) is a 422 naming
    `where`: a count the workflow cannot act on is refused, never rewritten."""
    value = (item.get("quantity") or {}).get("value")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise FhirError.of(422, "value", "The number of treatments asked for must be a number", where)
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        raise FhirError.of(422, "value", f"The number of treatments asked for must be a whole number (got {value})", where)
    if not 1 <= value <= MAX_TREATMENTS:
        raise FhirError.of(422, "value", f"The number of treatments asked for must be between 1 and {MAX_TREATMENTS} (got {value})", where)
    return int(value)


def adjudicate_preauthorization(claim: dict, policy: Policy) -> Decision:
    items = []
    for n, item in enumerate(claim.get("item") or [], start=1):
        codings = (item.get("productOrService") or {}).get("coding") or []
        covered = next((c for c in codings if policy.covers(c)), None)
        requested = requested_quantity(item, policy.initial_treatments, f"Claim.item[{n - 1}].quantity.value")
        approved = min(requested, policy.initial_treatments) if covered else 0
        items.append(ItemDecision(int(item.get("sequence") or n), covered, requested, approved))
    if not items:
        return Decision("queued", (), "No treatment was named: the request is queued for a case handler")
    if any(i.coding is None for i in items):
        return Decision("queued", tuple(items), "A treatment outside the policy was asked for: the request is queued for a case handler")
    if all(i.approved == i.requested for i in items):
        return Decision("complete", tuple(items), "Approved")
    return Decision("partial", tuple(items), f"Approved for {policy.initial_treatments} treatments at first; more can be requested")
