"""`Subscription/$get-ws-binding-token` and `Subscription/[id]/$get-ws-binding-token`
(Subscriptions Backport IG,
http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-get-ws-binding-token.html).

Answers Parameters `token` (send `bind-with-token <token>` on the websocket),
`expiration`, `subscription` (one per id) and `websocket-url`. Only websocket
subscriptions the caller may read can be bound; the token lives 5 minutes (never
past the caller's own access token) and is redeemed only while the caller may still
read each subscription (fhir_server/subscriptions/websocket.py).
"""

from __future__ import annotations

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..subscriptions.state import load, subscription_ids
from ..subscriptions.websocket import issue_token, may_receive

DEFINITION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token"


def websocket_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://"):] + "/websocket"
    return "ws://" + base_url.split("://", 1)[-1] + "/websocket"


@operation("get-ws-binding-token", ("type", "instance"), types=("Subscription",), definition=DEFINITION)
def get_ws_binding_token(call: OperationCall) -> Outcome:
    ids = subscription_ids(call)
    for sub_id in ids:
        row, _spec = load(call, sub_id)
        if row.channel_type != "websocket":
            raise FhirError.of(400, "invalid", f"Subscription/{sub_id} does not use the websocket channel")
        if row.status not in ("active", "error"):
            raise FhirError.of(400, "invalid", f"Subscription/{sub_id} is {row.status}, not active")
        with call.db.read() as conn:
            allowed = may_receive(conn, call.ctx.principal, row.id)
        if not allowed:
            raise FhirError.of(403, "forbidden", f"Subscription/{sub_id} carries resources this token may not read: only its "
                               "owner, or a client that may read all of what it watches, may bind to it")
    token, expires = issue_token(call.db, ids, call.ctx.principal)
    params = [{"name": "token", "valueString": token}, {"name": "expiration", "valueDateTime": expires}]
    params += [{"name": "subscription", "valueString": f"{call.ctx.base_url}/Subscription/{i}"} for i in ids]
    params.append({"name": "websocket-url", "valueUrl": websocket_url(call.ctx.base_url)})
    return Outcome(status=200, body=jsonio.dumps({"resourceType": "Parameters", "parameter": params}))
