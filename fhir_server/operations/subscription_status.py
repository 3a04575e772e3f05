"""`Subscription/$status` and `Subscription/[id]/$status` (Subscriptions Backport IG,
http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-status.html).

Returns a searchset Bundle of SubscriptionStatus Parameters (type `query-status`),
one per subscription: its status, topic and events-since-subscription-start, and
the error of its last failed delivery.
"""

from __future__ import annotations

from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..subscriptions import notify
from ..subscriptions.state import load, subscription_ids

DEFINITION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"


@operation("status", ("type", "instance"), types=("Subscription",), definition=DEFINITION)
def subscription_status(call: OperationCall) -> Outcome:
    entries = []
    for sub_id in subscription_ids(call):
        row, spec = load(call, sub_id)
        params = notify.status_parameters(call.ctx.base_url, row.id, spec.topic, row.status, "query-status",
                                          int(row.events_since_start or 0), [], row.last_error)
        entries.append({"fullUrl": f"urn:uuid:{params['id']}", "resource": params, "search": {"mode": "match"}})
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return Outcome(status=200, body=jsonio.dumps(bundle))
