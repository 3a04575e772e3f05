"""Evaluate a change against the subscriptions, inside the write's transaction.

`on_change` is an events subscriber (fhir_server/events.py): it runs in the
transaction that wrote the change, so the outbox rows it adds commit or roll
back with the change itself. Criteria are searches evaluated by the search
engine on the transaction's own view of the database, restricted to the
changed resource (`_id`): the new version is tested, not a later re-query.
A test against the previous version (topic `queryCriteria.previous`, filters
on a delete) re-indexes the previous version inside a SAVEPOINT that is then
rolled back.

Only subscriptions indexed under the changed resource type are loaded (one
index probe in `subscription_types`), so subscriptions on other types cost a
write nothing else.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from sqlalchemy import Connection, select, text, update

from .. import events
from ..errors import FhirError
from ..security.authz import Principal
from ..storage.database import transaction_memo
from . import topics
from .owner import indexed_as, may_see
from .spec import SubscriptionSpec
from .tables import subscription_events, subscription_types, subscriptions

log = logging.getLogger("fhir_server.subscriptions")

LIVE = ("active", "error")  # error: still queued, delivery keeps probing the endpoint


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def principal_from_json(text_: str | None) -> Principal:
    if not text_:
        return Principal()
    data = json.loads(text_)
    return Principal(subject=data.get("subject", "anonymous"), scopes=frozenset(data.get("scopes") or ()),
                     claims=data.get("claims") or {}, client_id=data.get("client_id"), issuer=data.get("issuer"),
                     patient=data.get("patient"), fhir_user=data.get("fhir_user"),
                     authenticated=bool(data.get("authenticated", True)), unrestricted=bool(data.get("unrestricted", False)))


def principal_to_json(p: Principal) -> str:
    return json.dumps({"subject": p.subject, "scopes": sorted(p.scopes), "claims": p.claims, "client_id": p.client_id,
                       "issuer": p.issuer, "patient": p.patient, "fhir_user": p.fhir_user,
                       "authenticated": p.authenticated, "unrestricted": p.unrestricted}, default=str)


# ------------------------------------------------------------------ criteria tests


def _matches_current(conn: Connection, res_type: str, res_id: str, params: list[tuple[str, str]]) -> bool:
    from ..search.engine import find_matches

    return bool(find_matches(conn, res_type, list(params) + [("_id", res_id)], limit=1))


def _matches_previous(conn: Connection, change: events.ResourceChange, params: list[tuple[str, str]]) -> bool:
    """Test the previous version: index it in a savepoint, search, roll back."""
    if change.old is None:
        return False
    with indexed_as(conn, change.res_type, change.res_id, change.old) as present:
        return present and _matches_current(conn, change.res_type, change.res_id, params)


def _search_params(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query.lstrip("?"), keep_blank_values=True)


def _fhirpath(expression: str, change: events.ResourceChange) -> bool:
    import fhirpathpy

    env = {"current": change.new if change.new is not None else [], "previous": change.old if change.old is not None else []}
    result = fhirpathpy.evaluate(change.new or change.old or {}, expression, env)
    return bool(result) and all(v is True for v in result) if isinstance(result, list) else bool(result)


def _trigger_fires(conn: Connection, trigger: topics.Trigger, change: events.ResourceChange) -> bool:
    interaction = "update" if change.method == "patch" else change.method
    if interaction not in trigger.interactions:
        return False
    if trigger.query_previous or trigger.query_current:
        if change.method == "create":
            prev_ok = trigger.result_for_create == "test-passes"
        elif trigger.query_previous:
            prev_ok = _matches_previous(conn, change, _search_params(trigger.query_previous))
        else:
            prev_ok = True
        if change.method == "delete":
            cur_ok = trigger.result_for_delete == "test-passes"
        elif trigger.query_current:
            cur_ok = _matches_current(conn, change.res_type, change.res_id, _search_params(trigger.query_current))
        else:
            cur_ok = True
        passed = (prev_ok and cur_ok) if trigger.require_both else (prev_ok or cur_ok)
        if not passed:
            return False
    if trigger.fhirpath:
        try:
            return _fhirpath(trigger.fhirpath, change)
        except Exception:  # an expression that cannot be evaluated on this resource does not fire
            log.warning("topic trigger FHIRPath failed on %s/%s", change.res_type, change.res_id)
            return False
    return True


def _passes_filters(conn: Connection, spec: SubscriptionSpec, change: events.ResourceChange) -> bool:
    for res_type, params in spec.filters:
        if res_type != change.res_type:
            continue
        if change.method == "delete":
            if not _matches_previous(conn, change, params):
                return False
        elif not _matches_current(conn, change.res_type, change.res_id, params):
            return False
    return True


def _matches(conn: Connection, spec: SubscriptionSpec, change: events.ResourceChange) -> tuple[bool, str | None]:
    """(whether the change is an event for this subscription, its topic)."""
    if spec.kind == "r4":
        if change.method == "delete":
            return _matches_previous(conn, change, spec.criteria), None
        return _matches_current(conn, change.res_type, change.res_id, spec.criteria), None
    topic = topics.lookup(spec.topic or "")
    if topic is None:
        return False, None
    for trigger in topic.triggers:
        if trigger.resource == change.res_type and _trigger_fires(conn, trigger, change):
            return _passes_filters(conn, spec, change), topic.url
    return False, None


def check_search(conn: Connection, res_type: str, params: list[tuple[str, str]], where: str) -> None:
    """400 unless `params` is a search the engine can run on `res_type`."""
    try:
        _matches_current(conn, res_type, "-", params)
    except FhirError as exc:
        for issue in exc.issues:
            issue.expression = [where]
        raise FhirError(400, exc.issues) from None


# ------------------------------------------------------------------ the subscriber

_WATCHERS = text(
    "SELECT s.id, s.spec, s.owner FROM subscription_types t JOIN subscriptions s ON s.id = t.sub_id "
    "WHERE t.res_type = :t AND s.status IN ('active', 'error') ORDER BY s.id"
)


_WATCHERS_HELD = "fhir_subscription_watchers"  # storage.database.transaction_memo: {res_type: rows}


def _watchers(conn: Connection, res_type: str) -> list:
    """The active subscriptions watching `res_type`, asked once per type and transaction:
    a transaction Bundle of 250 entries paid 250 identical round trips (a quarter of a
    Synthea ingest's time). A whole transaction sees the subscriptions as they were at its
    first write of the type; a Subscription written inside it drops what is held."""
    held = transaction_memo(conn, _WATCHERS_HELD)
    rows = held.get(res_type)
    if rows is None:
        rows = held[res_type] = conn.execute(_WATCHERS, {"t": res_type}).all()
    return rows


def on_change(conn: Connection, change: events.ResourceChange) -> None:
    """Queue one outbox row per subscription the change is an event for."""
    if change.res_type == "Subscription":
        from .registry import sync_subscription

        transaction_memo(conn, _WATCHERS_HELD).clear()
        sync_subscription(conn, change)
    rows = _watchers(conn, change.res_type)
    if not rows:
        return
    now = utcnow()
    for row in rows:  # in id order: concurrent writers lock subscription rows in one order
        spec = SubscriptionSpec.from_json(json.loads(row.spec))
        if spec.end and datetime.fromisoformat(spec.end) <= now:
            continue  # R4 Subscription.end: past its end, nothing more is queued
        try:
            matched, topic_url = _matches(conn, spec, change)
        except FhirError as exc:  # criteria that stopped being valid (a SearchParameter removed): no event
            log.warning("subscription %s: criteria cannot be evaluated: %s", row.id, exc)
            continue
        if not matched:
            continue
        content = change.new if change.new is not None else change.old
        if not may_see(conn, principal_from_json(row.owner), change.res_type, change.res_id, content,
                       current=change.new is not None):
            continue
        queue_event(conn, row.id, "event-notification", now, topic_url, change)


def queue_event(conn: Connection, sub_id: str, kind: str, now: datetime, topic_url: str | None = None,
                change: events.ResourceChange | None = None) -> int:
    """Add an outbox row; notifications take the subscription's next event number.

    The counter's UPDATE locks the subscription row until commit, so numbers
    are gap-free and in commit order per subscription."""
    number = 0
    if kind == "event-notification":
        number = conn.execute(
            update(subscriptions).where(subscriptions.c.id == sub_id)
            .values(events_since_start=subscriptions.c.events_since_start + 1)
            .returning(subscriptions.c.events_since_start)
        ).scalar_one()
    conn.execute(subscription_events.insert().values(
        sub_id=sub_id, event_number=number, kind=kind, topic=topic_url,
        res_type=change.res_type if change else None, res_id=change.res_id if change else None,
        version_id=change.version_id if change else None, method=change.method if change else None,
        created=now, status="pending", attempts=0, sent=None, last_error=None,
    ))
    return number


def watched_by(conn: Connection, res_type: str) -> list[str]:
    return list(conn.execute(select(subscription_types.c.sub_id).where(subscription_types.c.res_type == res_type)).scalars())
