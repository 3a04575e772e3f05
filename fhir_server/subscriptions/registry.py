"""Subscription writes: checked and activated before storing, mirrored after.

`prepare_subscription` (a write preparer, fhir_server/rest/rules.py) runs on
every create/update/patch of a Subscription before it is stored: it parses and
checks it (400/422, nothing written), sets `status` to active (R4: the server
activates a requested subscription), masks the secrets in `channel.header`
(the resource as stored and served carries `Name: ***`), and leaves the real
headers (sealed, secrets.py) and the writer's identity on the connection for
`sync_subscription`.

`sync_subscription` (called from the change subscriber, in the same
transaction) mirrors the stored Subscription into the `subscriptions` and
`subscription_types` tables and queues the handshake of a topic-based one.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, delete, select, update

from .. import events
from ..security.authz import Principal
from . import topics
from .matching import check_search, principal_to_json, queue_event, utcnow
from .secrets import SecretsUnavailable, seal, unseal
from .spec import SubscriptionSpec, mask_headers, parse_subscription, restore_masked, watched_types
from .tables import subscription_types, subscriptions

# The identity the delivery worker writes status changes with; such writes keep the owner.
SYSTEM = Principal(subject="system:subscriptions", scopes=frozenset({"system/*.*"}))
_PENDING = "fhir_subscription_pending"  # conn.info: res_id -> (spec json, owner json or None)

_settings = None


def configure(settings) -> None:
    global _settings
    _settings = settings


def prepare_subscription(conn: Connection, ctx, res_id: str | None, parsed) -> None:
    """Check, activate and mask a Subscription about to be stored."""
    from ..config import Settings

    settings = _settings or Settings()
    spec = parse_subscription(parsed.plain, settings, topics.lookup)
    spec.base_url = getattr(ctx, "base_url", "") or ""
    if spec.kind == "r4":
        check_search(conn, spec.criteria_type, spec.criteria, "Subscription.criteria")
    for res_type, params in spec.filters:
        check_search(conn, res_type, params, "Subscription.criteria")
    if res_id:
        held = conn.execute(select(subscriptions.c.spec).where(subscriptions.c.id == res_id)).scalar()
        if held:
            try:
                held_spec = unseal(conn, json.loads(held))
                previous = held_spec.get("headers") or []
            except SecretsUnavailable:
                held_spec, previous = {}, []  # masked values sent back then stay masked (the secret is lost)
            if previous and (held_spec.get("endpoint"), held_spec.get("channel_type")) != (spec.endpoint, spec.channel_type):
                check_no_masked_headers(spec.headers)  # a held secret never follows the subscription elsewhere
            spec.headers = restore_masked(spec.headers, previous)
    principal = getattr(ctx, "principal", None)
    if principal is not None:
        check_owner_reach(principal, spec)
    owner = None if principal is None or principal.subject == SYSTEM.subject else principal_to_json(principal)
    for doc in (parsed.plain, parsed.preserving):
        if doc.get("status") in ("requested", "active") or doc.get("status") is None:
            doc["status"] = "active"
            doc.pop("error", None)
        mask_headers(doc)
    conn.info.setdefault(_PENDING, {})[res_id] = (json.dumps(seal(conn, spec.to_json())), owner)


def check_no_masked_headers(headers: list[str]) -> None:
    """422 when a header is sent masked: on a changed endpoint the secret held is not
    reused (a writer could otherwise send another's secret to a server of their own)."""
    from ..errors import FhirError
    from .spec import MASK

    for h in headers:
        name, _, value = h.partition(":")
        if value.strip() == MASK:
            raise FhirError.of(422, "business-rule", f"channel.header '{name.strip()}' is masked; the endpoint changed, so "
                               "send the header's value again (a secret held is only kept for the same endpoint)",
                               "Subscription.channel.header")


def check_owner_reach(principal: Principal, spec: SubscriptionSpec) -> None:
    """403 unless the writer may search every resource type the subscription watches.

    A subscription is a standing search: its criteria (R4) or its topic's triggers
    and filters (Backport) must stay within the writer's own access. Within a type,
    what each notification carries is narrowed per resource at queue and delivery
    time (owner.may_see), so a patient's or a granular token's subscription never
    carries a resource the token could not read."""
    from ..errors import FhirError
    from ..security.authz import AccessRequest, authorize, visibility

    if principal.unrestricted:
        return
    topic = topics.lookup(spec.topic) if spec.topic else None
    types = sorted(set(watched_types(spec, topic)) | {t for t, _params in spec.filters})
    for res_type in types:
        try:
            authorize(principal, AccessRequest("search-type", res_type))
        except FhirError as exc:
            raise FhirError.of(403, "forbidden", f"This subscription watches {res_type}, which the token may not search: "
                               + "; ".join(i.diagnostics or "" for i in exc.issues), "Subscription.criteria") from None
        if visibility(principal, res_type, "s") == []:
            raise FhirError.of(403, "forbidden", f"This subscription watches {res_type}, of which the token may see nothing",
                               "Subscription.criteria")


def sync_subscription(conn: Connection, change: events.ResourceChange) -> None:
    """Mirror a stored Subscription (or its deletion) into the engine's tables."""
    sub_id = change.res_id
    pending = conn.info.get(_PENDING, {}).pop(sub_id, None)
    existing = conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id)).first()
    if change.new is None:  # deleted: stop delivering, keep the history of events
        conn.execute(delete(subscription_types).where(subscription_types.c.sub_id == sub_id))
        if existing is not None:
            conn.execute(update(subscriptions).where(subscriptions.c.id == sub_id).values(status="off", updated=utcnow()))
        return
    if pending is None:  # written without the preparer (e.g. a bulk load): read it as it is
        from ..config import Settings

        try:
            spec_json = json.dumps(seal(conn, parse_subscription(change.new, _settings or Settings(), topics.lookup).to_json()))
        except Exception:
            return
        owner = None
    else:
        spec_json, owner = pending
    spec = SubscriptionSpec.from_json(json.loads(spec_json))
    status = change.new.get("status", "active")
    now = utcnow()
    values = dict(status=status, kind=spec.kind, channel_type=spec.channel_type, spec=spec_json,
                  heartbeat_seconds=spec.heartbeat_seconds or None, updated=now)
    if owner is not None:
        values["owner"] = owner
    if existing is None:
        conn.execute(subscriptions.insert().values(
            id=sub_id, events_since_start=0, failures=0, next_attempt=None, last_error=None,
            lease_owner=None, lease_until=None, last_sent=now, owner=owner, **{k: v for k, v in values.items() if k != "owner"},
        ))
    else:
        if status == "active" and existing.status != "active" and owner is not None:
            values.update(failures=0, next_attempt=None, last_error=None)  # a client re-activated it
        conn.execute(update(subscriptions).where(subscriptions.c.id == sub_id).values(**values))
    conn.execute(delete(subscription_types).where(subscription_types.c.sub_id == sub_id))
    topic = topics.lookup(spec.topic) if spec.topic else None
    if status in ("active", "error"):
        conn.execute(subscription_types.insert(), [{"res_type": t, "sub_id": sub_id} for t in watched_types(spec, topic)])
    if spec.kind == "topic" and change.method == "create" and status == "active" and spec.channel_type == "rest-hook":
        queue_event(conn, sub_id, "handshake", now, spec.topic)
