"""The websocket channel: `[base]/websocket`.

R4 (http://hl7.org/fhir/R4/subscription.html#2.46.7.2): the client sends
`bind <subscription id>`, the server answers `bound <id>` and sends
`ping <id>` for each event. Backport IG: the client gets a token from
`Subscription/<id>/$get-ws-binding-token`, sends `bind-with-token <token>`,
receives a handshake Bundle per subscription and then each notification
Bundle as a text message.

Authentication. `bind <id>` needs the socket's upgrade request to carry
`Authorization: Bearer <access token>` (verified like any request: signature,
issuer, audience, expiry, revocation), and that principal must be allowed to read
that Subscription (the authz seam, instance included). A binding token is the way
for clients that cannot set headers (browsers): it names its subscriptions, lives
at most `TOKEN_SECONDS` (and never past the access token it was issued to), and its
requester must still be allowed to read each subscription when it is redeemed. An
upgrade with an invalid bearer token is refused (closed with 1008, policy
violation, before it is accepted); a refused bind is answered with an
`error <reason>` text message and the socket stays open.

Events for a websocket subscription wait in the outbox until a socket in some
server process is bound to it; that process's delivery worker sends them (so a
client that reconnects receives what it missed, in order).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import threading
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from ..errors import FhirError
from ..security.authz import ANONYMOUS, AccessRequest, Principal, authorize, visibility
from . import notify
from .matching import principal_from_json, principal_to_json, utcnow
from .spec import SubscriptionSpec
from .tables import subscription_ws_tokens, subscriptions

TOKEN_SECONDS = 300


class Sockets:
    """This process's bound sockets, shared between the event loop and the delivery thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_sub: dict[str, list[tuple[asyncio.AbstractEventLoop, WebSocket]]] = {}
        self.on_bind = None  # called after a bind (wakes the delivery thread)

    def bound_ids(self) -> set[str]:
        with self._lock:
            return {k for k, v in self._by_sub.items() if v}

    def bind(self, sub_id: str, ws: WebSocket) -> None:
        with self._lock:
            self._by_sub.setdefault(sub_id, []).append((asyncio.get_running_loop(), ws))
        if self.on_bind:
            self.on_bind()

    def unbind_socket(self, ws: WebSocket) -> None:
        with self._lock:
            for key in list(self._by_sub):
                self._by_sub[key] = [(lp, w) for lp, w in self._by_sub[key] if w is not ws]

    def send(self, sub_id: str, message: str, timeout: float) -> None:
        """Send to every socket bound to `sub_id`; raise if none took it."""
        with self._lock:
            targets = list(self._by_sub.get(sub_id, []))
        delivered = 0
        for loop, ws in targets:
            try:
                asyncio.run_coroutine_threadsafe(ws.send_text(message), loop).result(timeout)
                delivered += 1
            except Exception:
                self.unbind_socket(ws)
        if not delivered:
            raise RuntimeError("no bound websocket took the notification")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db, sub_ids: list[str], requester: Principal | None = None) -> tuple[str, str]:
    """A new binding token for the subscriptions; returns (token, expiry instant).

    It lives TOKEN_SECONDS, never past `requester`'s own access token, and remembers
    the requester (stored with the subscription ids; only the SHA-256 of the token is kept)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + timedelta(seconds=TOKEN_SECONDS)
    if requester is not None and requester.expires_at is not None:
        expires = min(expires, datetime.fromtimestamp(requester.expires_at, timezone.utc))
    data = {"subscriptions": sub_ids, "requester": principal_to_json(requester) if requester is not None else None}
    with db.write() as conn:
        conn.execute(delete(subscription_ws_tokens).where(subscription_ws_tokens.c.expires < now))
        conn.execute(subscription_ws_tokens.insert().values(digest=_digest(token), sub_ids=json.dumps(data), expires=expires))
    return token, expires.isoformat().replace("+00:00", "Z")


def _redeem(db, token: str) -> list[str]:
    """The subscription ids of a live binding token whose requester may still read each; else []."""
    t = subscription_ws_tokens.c
    with db.read() as conn:
        row = conn.execute(select(t.sub_ids, t.expires).where(t.digest == _digest(token[:200]))).first()
        if row is None:
            return []
        expires = row.expires if row.expires.tzinfo else row.expires.replace(tzinfo=timezone.utc)
        if expires <= utcnow():
            return []
        data = json.loads(row.sub_ids)
        if isinstance(data, list):  # tokens issued before requesters were recorded
            return []
        requester = principal_from_json(data["requester"]) if data.get("requester") else None
        ids = list(data.get("subscriptions") or [])
        if requester is None or not all(may_receive(conn, requester, s) for s in ids):
            return []
        return ids


def may_read_subscription(conn, principal: Principal, sub_id: str) -> bool:
    """Whether `principal` may read Subscription/`sub_id` (scopes, policies and instance criteria)."""
    from ..search.access import visible

    if not principal.authenticated:
        return False
    try:
        authorize(principal, AccessRequest("read", "Subscription", sub_id))
    except FhirError:
        return False
    return visible(conn, "Subscription", sub_id, visibility(principal, "Subscription", "r"))


def _same_identity(a: Principal, b: Principal) -> bool:
    return (a.subject, a.issuer, a.client_id, a.patient, a.fhir_user) == (b.subject, b.issuer, b.client_id, b.patient, b.fhir_user)


def may_receive(conn, principal: Principal, sub_id: str) -> bool:
    """Whether `principal` may have Subscription/`sub_id`'s notifications on a socket.

    A notification carries what the subscription's owner may see (owner.py), so the one
    who binds must see at least that: they may read the Subscription, and either they are
    its owner (same subject, issuer, client and SMART context, holding all the owner's
    scopes) or they may read the whole of every resource type it watches (a backend
    system client). Otherwise a token allowed to read Subscriptions could listen to
    another principal's subscription and receive resources it may not read."""
    from . import topics
    from .spec import watched_types

    if not may_read_subscription(conn, principal, sub_id):
        return False
    if principal.unrestricted:
        return True
    row = conn.execute(select(subscriptions.c.owner, subscriptions.c.spec).where(subscriptions.c.id == sub_id[:64])).first()
    if row is None:
        return False
    owner = principal_from_json(row.owner) if row.owner else None
    if owner is not None and _same_identity(owner, principal) and owner.scopes <= principal.scopes:
        return True
    spec = SubscriptionSpec.from_json(json.loads(row.spec))
    topic = topics.lookup(spec.topic) if spec.topic else None
    if spec.topic and topic is None:
        return False
    for res_type in watched_types(spec, topic):
        try:
            authorize(principal, AccessRequest("search-type", res_type))
        except FhirError:
            return False
        if visibility(principal, res_type, "r") is not None:  # narrower than the whole type
            return False
    return True


def _websocket_subscription(db, sub_id: str, principal: Principal | None = None):
    """The row of an active websocket subscription (whose notifications `principal`, when given, may receive)."""
    with db.read() as conn:
        row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id[:64])).first()
        if row is None or row.channel_type != "websocket" or row.status not in ("active", "error"):
            return None
        if principal is not None and not may_receive(conn, principal, sub_id):
            return None
    return row


async def _socket_principal(websocket: WebSocket, settings, base: str) -> Principal | None:
    """The principal of the upgrade request's bearer token: ANONYMOUS without one,
    None when the token is present but not valid (the caller refuses the socket)."""
    from ..auth.middleware import AUTH_OFF, request_base_url
    from ..auth.verify import IdentityRefused, InvalidToken

    if settings is not None and settings.auth.strip().lower() == "off":
        return AUTH_OFF
    header = websocket.headers.get("authorization")
    if not header:
        return ANONYMOUS
    kind, _, token = header.strip().partition(" ")
    verifier = getattr(websocket.app.state, "auth_verifier", None)
    if kind.lower() != "bearer" or not token.strip() or verifier is None:
        return None
    try:
        as_http = dict(websocket.scope, type="http", method="GET",
                       scheme={"ws": "http", "wss": "https"}.get(websocket.scope.get("scheme", "ws"), "http"))
        return await run_in_threadpool(verifier.verify, token.strip(), request_base_url(as_http, base))
    except (InvalidToken, IdentityRefused):
        return None
    except SQLAlchemyError:
        return None


def attach_websocket(app: FastAPI, db, sockets: Sockets, base: str, settings=None) -> None:
    @app.websocket(base + "/websocket")
    async def subscription_socket(websocket: WebSocket):
        principal = await _socket_principal(websocket, settings, base)
        if principal is None:
            await websocket.close(code=1008, reason="invalid bearer token")
            return
        await websocket.accept()
        try:
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                if frame.get("text") is None:  # a binary frame: the protocol's commands are text
                    await websocket.send_text("error send commands as text frames: 'bind <id>' or 'bind-with-token <token>'")
                    continue
                message = frame["text"].strip()
                command, _, argument = message.partition(" ")
                argument = argument.strip()
                if command == "bind":
                    if not principal.authenticated:
                        await websocket.send_text("error bind needs an access token (Authorization: Bearer on the upgrade "
                                                  "request), or use 'bind-with-token <token>' from $get-ws-binding-token")
                        continue
                    row = await run_in_threadpool(_websocket_subscription, db, argument, principal)
                    if row is None:
                        await websocket.send_text(f"error no active websocket subscription '{argument[:64]}' whose notifications "
                                                  "this token may receive")
                        continue
                    sockets.bind(argument, websocket)
                    await websocket.send_text(f"bound {argument}")
                elif command == "bind-with-token":
                    sub_ids = await run_in_threadpool(_redeem, db, argument)
                    rows = [await run_in_threadpool(_websocket_subscription, db, s) for s in sub_ids]
                    if not sub_ids or any(r is None for r in rows):
                        await websocket.send_text("error invalid or expired binding token")
                        continue
                    for row in rows:
                        spec = SubscriptionSpec.from_json(json.loads(row.spec))
                        handshake = notify.notification_bundle(spec.base_url, row.id, spec, row.status, "handshake",
                                                               int(row.events_since_start or 0), [])
                        await websocket.send_text(handshake.decode())
                        sockets.bind(row.id, websocket)
                else:
                    await websocket.send_text("error unknown command: use 'bind <id>' or 'bind-with-token <token>'")
        except WebSocketDisconnect:
            pass
        finally:
            sockets.unbind_socket(websocket)
