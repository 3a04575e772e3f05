"""A real HTTP receiver on a free loopback port, subscription helpers, and
server processes for the kill/restart and two-process tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.processes import stop_group

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "http://fhir-server.example.org/SubscriptionTopic/"
ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """Records every request; answers `status` (200, or e.g. 503 to play a broken endpoint)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.delay = 0.0  # seconds before answering (a slow or hanging endpoint)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    status = receiver.status
                    if status < 300:
                        receiver.requests.append({"method": self.command, "path": self.path,
                                                  "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bundles(self) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests if r["body"]]

    def notifications(self) -> list[dict]:
        """(type, event numbers, bundle) of every backport notification received."""
        out = []
        for b in self.bundles():
            params = {p["name"]: p for p in b["entry"][0]["resource"]["parameter"] if p["name"] != "notification-event"}
            numbers = [int(part["valueString"]) for p in b["entry"][0]["resource"]["parameter"]
                       if p["name"] == "notification-event" for part in p["part"] if part["name"] == "event-number"]
            out.append({"type": params["type"]["valueCode"], "numbers": numbers, "bundle": b})
        return out

    def event_numbers(self) -> list[int]:
        return [n for x in self.notifications() if x["type"] == "event-notification" for n in x["numbers"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def subscriptions_made(client):
    """Ids of Subscriptions a test made; switched off afterwards so other tests' writes skip them."""
    made: list[str] = []
    yield made
    for sub_id in made:
        client.delete(f"/fhir/Subscription/{sub_id}")


@pytest.fixture
def subscribe(client, subscriptions_made):
    def make(resource: dict, expect: int = 201) -> dict:
        r = client.post("/fhir/Subscription", json=resource)
        assert r.status_code == expect, r.text
        body = r.json()
        if expect == 201:
            subscriptions_made.append(body["id"])
        return body

    return make


def r4_subscription(criteria: str, endpoint: str, payload: str | None = None, headers: list[str] | None = None,
                    channel_type: str = "rest-hook") -> dict:
    channel: dict = {"type": channel_type}
    if channel_type == "rest-hook":
        channel["endpoint"] = endpoint
    if payload:
        channel["payload"] = payload
    if headers:
        channel["header"] = headers
    return {"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": criteria, "channel": channel}


def topic_subscription(topic: str, endpoint: str | None, filters: list[str] = (), content: str = "id-only",
                       channel_type: str = "rest-hook", heartbeat: int | None = None, max_count: int | None = None) -> dict:
    channel: dict = {"type": channel_type, "payload": "application/fhir+json",
                     "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]}}
    if endpoint:
        channel["endpoint"] = endpoint
    ext = []
    if heartbeat:
        ext.append({"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat})
    if max_count:
        ext.append({"url": BACKPORT + "backport-max-count", "valuePositiveInt": max_count})
    if ext:
        channel["extension"] = ext
    sub = {"resourceType": "Subscription", "meta": {"profile": [BACKPORT + "backport-subscription"]},
           "status": "requested", "reason": "test", "criteria": TOPIC + topic, "channel": channel}
    if filters:
        sub["_criteria"] = {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f} for f in filters]}
    return sub


def loopback_only(sender):
    """Tests send only to this machine: any other target fails like a dead endpoint
    (the shared test database also holds the official example Subscriptions)."""
    from urllib.parse import urlsplit

    from fhir_server.subscriptions.spec import _is_loopback

    def send(request, timeout):
        if not _is_loopback(urlsplit(request.url).hostname or ""):
            raise RuntimeError(f"tests do not send to {request.url}")
        sender(request, timeout)

    return send


@pytest.fixture
def deliver(app, settings):
    """Run one delivery round in this thread (the test app runs no background worker)."""
    from fhir_server.subscriptions.delivery import Deliverer, HttpSender

    send = loopback_only(HttpSender())

    def run(**overrides) -> int:
        s = settings.model_copy(update=overrides) if overrides else settings
        return Deliverer(app.state.db, s, app.state.subscription_sockets, send=send).run_once()

    return run


# ------------------------------------------------------------------ server processes


class ServerProcess:
    """`fhir-server serve` in a process group of its own, on a free port."""

    def __init__(self, database_url: str, env: dict[str, str], headers: dict[str, str]):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        full_env = {**os.environ, "FHIR_SERVER_DATABASE_URL": database_url, **env}
        self.log = tempfile.TemporaryFile()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "fhir_server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            cwd=ROOT, env=full_env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.time() + 60
        while True:
            if self.popen.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("server exited: " + self.log.read().decode()[-2000:])
            try:
                if httpx.get(self.base + "/metadata", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.kill()
                raise RuntimeError("server did not start")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, like a crash."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self.log.close()

    def stop(self) -> None:
        """SIGINT (uvicorn shuts down cleanly), SIGKILL after 20 s."""
        stop_group(self.popen)
        self.log.close()


@pytest.fixture
def server_processes(database_url, auth_headers):
    started: list[ServerProcess] = []

    def start(**env) -> ServerProcess:
        p = ServerProcess(database_url, {k: str(v) for k, v in env.items()}, auth_headers)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.popen.poll() is None:
            p.stop()
