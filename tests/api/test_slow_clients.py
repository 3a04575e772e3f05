"""The HTTP server as `serve` runs it (api/protocol.py, cli.uvicorn_options):
deadlines for request heads and bodies, a bound on connections, no `server`
header. Real sockets against a real uvicorn on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fhir_server.api.protocol import NoDelayHTTPProtocol


class QuickDeadlines(NoDelayHTTPProtocol):
    HEADER_TIMEOUT = 0.5
    BODY_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def served(app, settings):
    import uvicorn

    from fhir_server.cli import uvicorn_options

    options = {**uvicorn_options(settings), "http": QuickDeadlines, "limit_concurrency": 20}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield port
    server.should_exit = True
    thread.join(10)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return out
        if not chunk:
            return out
        out += chunk


def _request(port: int, raw: bytes) -> bytes:
    s = _connect(port)
    s.sendall(raw)
    return _read_all(s)


def test_no_server_header(served, auth_headers):
    extra = "".join(f"{k}: {v}\r\n" for k, v in auth_headers.items())
    answer = _request(served, f"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"\r\nserver:" not in head


def test_a_silent_connection_is_closed(served):
    s = _connect(served)
    started = time.monotonic()
    answer = _read_all(s)
    assert time.monotonic() - started < 4
    assert answer.startswith(b"HTTP/1.1 408")


def test_unfinished_headers_are_cut_off(served):
    s = _connect(served)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    answer = _read_all(s)
    assert time.monotonic() - started < 4 and answer.startswith(b"HTTP/1.1 408")


def test_a_body_shorter_than_its_content_length_is_cut_off(served, auth_headers):
    extra = "".join(f"{k}: {v}\r\n" for k, v in auth_headers.items())
    s = _connect(served)
    s.sendall(f"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\n{extra}\r\n".encode()
              + b'{"resourceType":')
    started = time.monotonic()
    answer = _read_all(s)
    assert time.monotonic() - started < 4
    assert answer.startswith(b"HTTP/1.1 408") or answer == b""
    # the server is still answering others
    assert _request(served, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_many_slow_connections_are_all_closed_and_the_server_answers(served):
    slow = [_connect(served) for _ in range(60)]
    for s in slow:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    time.sleep(1.5)
    closed = 0
    for s in slow:
        s.settimeout(2)
        if _read_all(s).startswith(b"HTTP/1.1 408"):
            closed += 1
        s.close()
    assert closed == len(slow)
    assert _request(served, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_limit_get_503(served):
    held = [_connect(served) for _ in range(25)]  # limit_concurrency is 20 here
    try:
        time.sleep(0.1)
        answer = _request(served, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503")
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert _request(served, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
