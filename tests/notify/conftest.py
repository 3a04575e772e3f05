"""A real SMTP server (aiosmtpd) and a fake SMS gateway (an HTTP server), both on
free loopback ports, started by the tests."""

from __future__ import annotations

import email
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _Inbox:
    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def to(self, address: str):
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    inbox.port = controller.port
    try:
        yield inbox
    finally:
        controller.stop()


class SmsGateway:
    """Accepts POSTed JSON, answers {"id": "..."}; `fail_next` answers 503 that many times."""

    def __init__(self):
        self.received: list[dict] = []
        self.fail_next = 0
        gw = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if gw.fail_next > 0:
                    gw.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                msg = {"body": json.loads(body), "headers": dict(self.headers)}
                gw.received.append(msg)
                reply = json.dumps({"id": f"gw-{len(gw.received)}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def to(self, number: str):
        return [m for m in self.received if m["body"]["to"] == number]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sms_gateway():
    gw = SmsGateway()
    try:
        yield gw
    finally:
        gw.close()


@pytest.fixture
def notify_settings(settings, smtp_server, sms_gateway):
    """The session settings with both channels pointing at the local servers."""
    return settings.model_copy(update={
        "notify_smtp_host": "127.0.0.1", "notify_smtp_port": smtp_server.port, "notify_smtp_from": "bokning@vard.example",
        "notify_sms_url": sms_gateway.url, "notify_sms_token": "secret-token",
    })
