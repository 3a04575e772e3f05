"""Insurance claims (R4 financial module: Claim, ClaimResponse, Coverage).

- `Claim/$submit` (operations/claim_submit.py -> submit.py): pre-authorisation
  adjudicated with a policy kept as data (mappings/claims/policies.yaml),
  requests for more treatment and reimbursements queued for people (Task);
- decisions.py: a handler's ClaimResponse checked and acted on;
- guarantee.py: the payment-guarantee PDF in the case;
- notify.py: the seam to the patient notifier.

Plugin hooks: `setup` installs the ClaimResponse write transform and change subscriber.
"""

from __future__ import annotations


def setup(settings) -> None:
    from ... import events
    from ...rest import rules
    from .decisions import on_claim_response, transform_claim_response

    rules.register_preparer(
        "ClaimResponse",
        lambda conn, ctx, res_id, parsed: transform_claim_response(conn, ctx, "ClaimResponse", res_id, parsed),
        "claims.decision",
    )
    events.subscribe(on_claim_response, types=("ClaimResponse",))
