"""`Claim/$submit` (http://hl7.org/fhir/R4/claim-operation-submit.html).

POST [base]/Claim/$submit with a Parameters resource whose `resource`
parameter holds the Claim (a bare Claim as the body is accepted too). The
Claim, its ClaimResponse and whatever the workflow adds (a Task, a payment
guarantee) are written in one transaction; the answer is the ClaimResponse
(the operation's `return` parameter is a single resource, so it is the body).
A Bundle of claims is not supported (422).
"""

from __future__ import annotations

from ..errors import FhirError
from ..model import jsonio
from ..rest import interactions as ix
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..workflows.claims.submit import submit

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Claim-submit"


def _claim_of(call: OperationCall) -> ix.ParsedResource:
    if call.method != "POST":
        raise FhirError.of(405, "not-supported", "$submit is invoked with POST and the Claim")
    if not call.body.strip():
        raise FhirError.of(400, "required", "$submit needs the Claim (a Parameters 'resource' parameter, or the Claim itself)")
    body = jsonio.parse_preserving(call.body)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        found = [p.get("resource") for p in body.get("parameter") or [] if isinstance(p, dict) and p.get("name") == "resource"]
        if len(found) != 1:
            raise FhirError.of(400, "required", "$submit takes exactly one 'resource' parameter holding the Claim", "Parameters.parameter")
        body = found[0]
    if not isinstance(body, dict) or body.get("resourceType") != "Claim":
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise FhirError.of(422, "not-supported", f"$submit here takes a Claim, not {kind}", "Parameters.parameter.resource")
    body.pop("id", None)
    return ix.ParsedResource.from_preserving(body)


@operation("submit", ("type",), types=("Claim",), definition=DEFINITION)
def claim_submit(call: OperationCall) -> Outcome:
    parsed = _claim_of(call)
    ix.prevalidate("Claim", parsed)  # before the write transaction
    with call.db.write() as conn:
        response = submit(conn, call.ctx, parsed)
    return Outcome(status=200, body=jsonio.dumps(response), res_type="ClaimResponse", res_id=response.get("id"))
