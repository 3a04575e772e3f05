"""`Subscription/[id]/$events` (Subscriptions Backport IG,
http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-events.html).

Parameters: `eventsSinceNumber`, `eventsUntilNumber` (integers, inclusive) and
`content` (empty | id-only | full-resource; default the subscription's own).
Answers the history Bundle of a `query-event` notification holding the events
still in the outbox in that range (sent or not), each focus as it was at the
event's version. Events about resources the caller may not read are left out.
"""

from __future__ import annotations

from sqlalchemy import select

from ..errors import FhirError
from ..rest.context import Outcome
from ..rest.interactions import fhir_instant
from ..rest.operations import OperationCall, body_parameters, operation
from ..subscriptions import notify
from ..subscriptions.delivery import _aware
from ..subscriptions.owner import event_focus, restricted
from ..subscriptions.spec import CONTENT_CODES
from ..subscriptions.state import load
from ..subscriptions.tables import subscription_events

DEFINITION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events"
MAX_EVENTS = 1000
INT64_MAX = 2**63 - 1  # event numbers are stored as BIGINT


def _int(params: dict, name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise FhirError.of(400, "invalid", f"$events parameter '{name}' must be an integer, got '{value}'", name) from None
    if not 0 <= number <= INT64_MAX:
        raise FhirError.of(400, "invalid", f"$events parameter '{name}' must be from 0 to {INT64_MAX}, got {value}", name)
    return number


@operation("events", ("instance",), types=("Subscription",), definition=DEFINITION)
def subscription_events_op(call: OperationCall) -> Outcome:
    params = dict(list(call.params) + body_parameters(call))
    since, until = _int(params, "eventsSinceNumber"), _int(params, "eventsUntilNumber")
    content = params.get("content")
    if content is not None and content not in CONTENT_CODES:
        raise FhirError.of(400, "invalid", f"content must be one of {', '.join(CONTENT_CODES)}", "content")
    row, spec = load(call, call.res_id)
    e = subscription_events.c
    q = select(subscription_events).where(e.sub_id == row.id, e.kind == "event-notification", e.status != "withheld")
    if since is not None:
        q = q.where(e.event_number >= since)
    if until is not None:
        q = q.where(e.event_number <= until)
    events = []
    principal = call.ctx.principal
    with call.db.read() as conn:
        rows = conn.execute(q.order_by(e.event_number).limit(MAX_EVENTS)).all()
    types = {r.res_type for r in rows if r.res_type}
    opener = call.db.write if any(restricted(principal, t) for t in types) else call.db.read
    with opener() as conn:  # a restricted caller's check may index an older version in a savepoint
        for r in rows:
            content_bytes = None
            if r.res_type and r.version_id:
                content_bytes, seen = event_focus(conn, principal, r.res_type, r.res_id, r.version_id, r.method)
                if not seen:
                    continue
            events.append(notify.Event(r.event_number, r.kind, r.topic, r.res_type, r.res_id, r.version_id, r.method,
                                       fhir_instant(_aware(r.created)), content_bytes))
    body = notify.notification_bundle(call.ctx.base_url, row.id, spec, row.status, "query-event",
                                      int(row.events_since_start or 0), events, content or spec.content)
    return Outcome(status=200, body=body)
