"""Deliver the subscription outbox: in order per subscription, at least once.

A worker claims one subscription at a time (a lease on its `subscriptions`
row; on PostgreSQL the candidate is picked `FOR UPDATE SKIP LOCKED`, so
several server processes share the work and each event goes out from one of
them), sends its pending notifications oldest first, and marks them sent. A
failed delivery stops that subscription's queue (later events wait behind it:
order is kept), counts a failure and waits base * 2**(failures-1) seconds,
capped; after `subscription_max_failures` failures in a row the Subscription's
status becomes `error` (a new version, with `error` saying why). Delivery goes
on being tried at the capped interval; the first success sets it back to
`active`. A process that dies mid-delivery leaves a lease that expires, so
another (or the restarted) process sends the event again: receivers drop
duplicates by event number.

Before sending, the owner's right to see each focus resource is checked again
through the authz seam; an event the owner may no longer see is `withheld`.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

import httpx
from sqlalchemy import and_, exists, or_, select, update

from ..jobs.runner import worker_name
from ..rest.interactions import fhir_instant
from . import notify
from .matching import LIVE, principal_from_json, queue_event, utcnow
from .owner import event_focus, restricted
from .secrets import SecretsUnavailable, unseal
from .spec import SubscriptionSpec
from .tables import subscription_events, subscriptions

log = logging.getLogger("fhir_server.subscriptions")

LEASE_SECONDS = 60


class SocketRegistry(Protocol):
    def bound_ids(self) -> set[str]: ...
    def send(self, sub_id: str, message: str, timeout: float) -> None: ...


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


class HttpSender:
    """Sends rest-hook requests over one pooled client (keep-alive per endpoint);
    raises unless the answer is 2xx. Redirects are not followed."""

    def __init__(self):
        self._local = threading.local()

    def __call__(self, request: notify.Request, timeout: float) -> None:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(follow_redirects=False)
        resp = client.request(request.method, request.url, content=request.body, headers=request.headers, timeout=timeout)
        if not 200 <= resp.status_code < 300:
            raise RuntimeError(f"endpoint answered HTTP {resp.status_code}")


class Deliverer:
    """One process's delivery loop; `run_once` is also what tests and the bench call."""

    def __init__(self, db, settings, sockets: SocketRegistry | None = None,
                 send: Callable[[notify.Request, float], None] | None = None, owner: str | None = None):
        self.db = db
        self.settings = settings
        self.sockets = sockets
        self.send = send or HttpSender()
        self.owner = owner or worker_name()

    # ------------------------------------------------------------ claiming

    def _claim(self, now: datetime, skip: set[str] = frozenset()) -> str | None:
        s, e = subscriptions.c, subscription_events.c
        ws_ids = sorted(self.sockets.bound_ids()) if self.sockets else []
        channel = s.channel_type == "rest-hook"
        if ws_ids:
            channel = or_(channel, and_(s.channel_type == "websocket", s.id.in_(ws_ids)))
        free = and_(
            s.status.in_(LIVE),
            or_(s.next_attempt.is_(None), s.next_attempt <= now),
            or_(s.lease_until.is_(None), s.lease_until < now),
        )
        pending = exists().where(e.sub_id == s.id, e.status == "pending")
        with self.db.write() as conn:
            q = select(s.id).where(free, channel, pending, s.id.notin_(sorted(skip))).order_by(s.next_attempt, s.id).limit(1)
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True, of=subscriptions)
            sub_id = conn.execute(q).scalar()
            if sub_id is None:
                return None
            got = conn.execute(update(subscriptions).where(s.id == sub_id, free).values(
                lease_owner=self.owner, lease_until=now + timedelta(seconds=LEASE_SECONDS))).rowcount
            return sub_id if got == 1 else None

    def _release(self, sub_id: str, **values) -> None:
        s = subscriptions.c
        with self.db.write() as conn:
            conn.execute(update(subscriptions).where(s.id == sub_id, s.lease_owner == self.owner).values(
                lease_owner=None, lease_until=None, **values))

    # ------------------------------------------------------------ the loop

    def run_once(self) -> int:
        """Queue due heartbeats, then serve each due subscription once; returns events sent."""
        self.queue_heartbeats()
        sent = 0
        served: set[str] = set()
        while True:
            sub_id = self._claim(utcnow(), served)
            if sub_id is None:
                return sent
            served.add(sub_id)
            sent += self._deliver(sub_id)

    def queue_heartbeats(self) -> None:
        s = subscriptions.c
        now = utcnow()
        with self.db.read() as conn:
            rows = conn.execute(select(s.id, s.heartbeat_seconds, s.last_sent).where(
                s.kind == "topic", s.status == "active", s.heartbeat_seconds > 0)).all()
        for row in rows:
            last = _aware(row.last_sent)
            due = now - timedelta(seconds=row.heartbeat_seconds)
            if last is None or last > due:  # last_sent is set when a subscription starts
                continue
            with self.db.write() as conn:
                claimed = conn.execute(update(subscriptions).where(
                    s.id == row.id, or_(s.last_sent.is_(None), s.last_sent <= due)).values(last_sent=now)).rowcount
                if claimed:
                    queue_event(conn, row.id, "heartbeat", now)

    def _deliver(self, sub_id: str) -> int:
        s, e = subscriptions.c, subscription_events.c
        with self.db.read() as conn:
            sub = conn.execute(select(subscriptions).where(s.id == sub_id)).first()
            try:
                spec = SubscriptionSpec.from_json(unseal(conn, json.loads(sub.spec)))
            except SecretsUnavailable as exc:  # nothing goes out without its headers
                log.error("subscription %s: %s", sub_id, exc)
                self._release(sub_id, last_error=str(exc), next_attempt=utcnow() + timedelta(
                    seconds=self.settings.subscription_retry_max_seconds))
                return 0
            limit = max(1, spec.max_count) if spec.kind == "topic" else 1
            rows = conn.execute(select(subscription_events).where(e.sub_id == sub_id, e.status == "pending")
                                .order_by(e.id).limit(200)).all()
        owner = principal_from_json(sub.owner)
        sent = 0
        failures = sub.failures
        batches = _batches(rows, limit)
        for batch in batches:
            events, withheld = self._load(batch, spec, owner)
            if withheld:
                self._mark(withheld, "withheld")
            if not events:
                continue
            try:
                self._send(sub, spec, events)
            except Exception as exc:  # the endpoint is down or refused: back off, keep order
                failures += 1
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("subscription %s: delivery failed (%d in a row): %s", sub_id, failures, error)
                with self.db.write() as conn:
                    conn.execute(update(subscription_events).where(e.id.in_(_ids(events)))
                                 .values(attempts=e.attempts + 1, last_error=error))
                delay = min(self.settings.subscription_retry_max_seconds,
                            self.settings.subscription_retry_base_seconds * 2 ** (failures - 1))
                next_attempt = utcnow() + timedelta(seconds=delay)
                if spec.channel_type == "websocket":
                    # a socket that went away is not a failing endpoint: the events wait for the next bind
                    failures, next_attempt = sub.failures, None
                self._release(sub_id, failures=failures, last_error=error, next_attempt=next_attempt)
                if failures >= self.settings.subscription_max_failures and sub.status == "active":
                    self._set_status(sub_id, spec, "error", f"Delivery failed {failures} times in a row; last: {error}")
                return sent
            self._mark(_ids(events), "sent")
            sent += sum(1 for ev in events if ev.kind == "event-notification")
        self._release(sub_id, failures=0, last_error=None, next_attempt=None, last_sent=utcnow())
        if sub.status == "error":
            self._set_status(sub_id, spec, "active", None)
        return sent

    def _load(self, batch, spec: SubscriptionSpec, owner) -> tuple[list[notify.Event], list[int]]:
        """Events with their focus version read; ids the owner may no longer see.

        The owner's reach is asked about the very version the event names: the current
        one through the index, another (a deletion's, or one changed since) by indexing
        it in a rolled-back savepoint, hence a writable connection for restricted owners."""
        events, withheld = [], []
        types = {r.res_type for r in batch if r.res_type}
        opener = self.db.write if any(restricted(owner, t) for t in types) else self.db.read
        with opener() as conn:
            for r in batch:
                resource = None
                if r.res_type and r.version_id:
                    resource, seen = event_focus(conn, owner, r.res_type, r.res_id, r.version_id, r.method)
                    if not seen:
                        withheld.append(r.id)
                        continue
                ev = notify.Event(r.event_number, r.kind, r.topic, r.res_type, r.res_id, r.version_id, r.method,
                                  fhir_instant(_aware(r.created)), resource)
                ev.row_id = r.id  # type: ignore[attr-defined]
                events.append(ev)
        return events, withheld

    def _send(self, sub, spec: SubscriptionSpec, events: list[notify.Event]) -> None:
        timeout = float(spec.timeout_seconds or self.settings.subscription_delivery_timeout_seconds)
        kind = events[0].kind
        base = spec.base_url
        if spec.channel_type == "websocket":
            if self.sockets is None:
                raise RuntimeError("no websocket bound in this process")
            msg = notify.websocket_message(base, sub.id, spec, "active", kind, _since(sub, events), events)
            self.sockets.send(sub.id, msg, timeout)
            return
        request = notify.rest_hook_request(base, sub.id, spec, "active", kind, _since(sub, events), events)
        self.send(request, timeout)

    def _mark(self, ids: list[int], status: str) -> None:
        if not ids:
            return
        e = subscription_events.c
        with self.db.write() as conn:
            conn.execute(update(subscription_events).where(e.id.in_(ids), e.status == "pending").values(
                status=status, sent=utcnow() if status == "sent" else None))

    def _set_status(self, sub_id: str, spec: SubscriptionSpec, status: str, error: str | None) -> None:
        """Write a new version of the Subscription with `status` (and `error`)."""
        from ..errors import FhirError
        from ..model import jsonio
        from ..rest import interactions as ix
        from ..rest.context import RequestContext
        from ..storage import repository as repo
        from .registry import SYSTEM

        try:
            with self.db.write() as conn:
                current = repo.read_current(conn, "Subscription", sub_id, for_update=True)
                if current is None or current.deleted:
                    return
                doc = jsonio.parse_preserving(current.content)
                if doc.get("status") not in ("active", "error") or doc.get("status") == status:
                    return
                doc["status"] = status
                if error:
                    doc["error"] = error
                else:
                    doc.pop("error", None)
                ctx = RequestContext(base_url=spec.base_url, principal=SYSTEM)
                ix.update(conn, ctx, "Subscription", sub_id, ix.ParsedResource.from_preserving(doc))
        except FhirError as exc:
            log.warning("subscription %s: could not set status %s: %s", sub_id, status, exc)


def _ids(events: list[notify.Event]) -> list[int]:
    return [getattr(ev, "row_id") for ev in events]


def _since(sub, events: list[notify.Event]) -> int:
    numbers = [ev.number for ev in events if ev.kind == "event-notification"]
    return max(numbers) if numbers else max(0, _current_count(sub))


def _current_count(sub) -> int:
    return int(sub.events_since_start or 0)


def _batches(rows, limit: int) -> list[list]:
    """Handshakes and heartbeats alone; notifications up to `limit` per bundle."""
    out: list[list] = []
    for r in rows:
        if r.kind == "event-notification" and out and len(out[-1]) < limit and out[-1][0].kind == "event-notification":
            out[-1].append(r)
        else:
            out.append([r])
    return out


class DeliveryThread(threading.Thread):
    """Runs `Deliverer.run_once` every poll interval until stopped."""

    def __init__(self, deliverer: Deliverer, poll_seconds: float):
        super().__init__(name="fhir-subscriptions", daemon=True)
        self.deliverer = deliverer
        self.poll_seconds = poll_seconds
        self.stop_event = threading.Event()
        self.wakeup = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.deliverer.run_once()
            except Exception:  # the database away for a moment: try again next round
                log.exception("subscription delivery round failed")
            self.wakeup.wait(self.poll_seconds)
            self.wakeup.clear()

    def stop(self) -> None:
        self.stop_event.set()
        self.wakeup.set()
