"""The websocket channel: `[base]/websocket`.

R4 (http://hl7.org/fhir/R4/subscription.html#2.46.7.2): the client sends
`bind <subscription id>`, the server answers `bound <id>` and sends
`ping <id>` for each event. Backport IG: the client gets a token from
`Subscription/<id>/$get-ws-binding-token`, sends `bind-with-token <token>`,
receives a handshake Bundle per subscription and then each notification
Bundle as a text message.

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
from datetime import timedelta

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from sqlalchemy import delete, select
from starlette.concurrency import run_in_threadpool

from . import notify
from .matching import utcnow
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


def issue_token(db, sub_ids: list[str]) -> tuple[str, str]:
    """A new binding token for the subscriptions; returns (token, expiry instant)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + timedelta(seconds=TOKEN_SECONDS)
    with db.write() as conn:
        conn.execute(delete(subscription_ws_tokens).where(subscription_ws_tokens.c.expires < now))
        conn.execute(subscription_ws_tokens.insert().values(digest=_digest(token), sub_ids=json.dumps(sub_ids), expires=expires))
    return token, expires.isoformat().replace("+00:00", "Z")


def _redeem(db, token: str) -> list[str]:
    t = subscription_ws_tokens.c
    with db.read() as conn:
        row = conn.execute(select(t.sub_ids, t.expires).where(t.digest == _digest(token))).first()
    if row is None:
        return []
    expires = row.expires if row.expires.tzinfo else row.expires.replace(tzinfo=utcnow().tzinfo)
    return json.loads(row.sub_ids) if expires > utcnow() else []


def _websocket_subscription(db, sub_id: str):
    with db.read() as conn:
        row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id)).first()
    if row is None or row.channel_type != "websocket" or row.status not in ("active", "error"):
        return None
    return row


def attach_websocket(app: FastAPI, db, sockets: Sockets, base: str) -> None:
    @app.websocket(base + "/websocket")
    async def subscription_socket(websocket: WebSocket):
        await websocket.accept()
        try:
            while True:
                message = (await websocket.receive_text()).strip()
                command, _, argument = message.partition(" ")
                argument = argument.strip()
                if command == "bind":
                    row = await run_in_threadpool(_websocket_subscription, db, argument)
                    if row is None:
                        await websocket.send_text(f"error no active websocket subscription '{argument}'")
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
