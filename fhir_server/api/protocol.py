"""uvicorn's HTTP protocol with TCP_NODELAY and deadlines for slow clients.

TCP_NODELAY: with --workers > 1 uvicorn binds the listening socket itself, and
asyncio then does not set TCP_NODELAY on accepted sockets; Nagle's algorithm
meets the client's delayed ACK and every keep-alive request after the first
waits ~40 ms (uvicorn issue 3149). Setting the option ourselves removes the stall.

Deadlines: uvicorn closes idle keep-alive connections, but a client that opens
a connection and sends nothing, sends half a request head, or sends a body
shorter than its Content-Length holds a connection (and, for the body, a
request task) for ever. Here a request head must arrive within
`HEADER_TIMEOUT` seconds of the connection opening or of its first byte, and
the body within `BODY_TIMEOUT` seconds of the head; otherwise the connection
is answered 408 (when nothing was sent yet) and closed. Together with
uvicorn's `limit_concurrency` (`serve --limit-concurrency`) this bounds what
slow or malicious clients can hold. Both deadlines are settings
(FHIR_SERVER_HTTP_HEADER_TIMEOUT, FHIR_SERVER_HTTP_BODY_TIMEOUT).
"""

from __future__ import annotations

import os
import socket

try:  # the fast parser when installed (uvicorn[standard])
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - pure-Python fallback
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/fhir+json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)
_TIMEOUT_BODY = (
    b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"timeout",'
    b'"diagnostics":"The request was not received in time; the connection is closed"}]}'
)


class NoDelayHTTPProtocol(_Base):
    HEADER_TIMEOUT = float(os.environ.get("FHIR_SERVER_HTTP_HEADER_TIMEOUT", "10"))
    BODY_TIMEOUT = float(os.environ.get("FHIR_SERVER_HTTP_BODY_TIMEOUT", "60"))

    _deadline = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        super().connection_made(transport)
        self._arm(self.HEADER_TIMEOUT)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:  # type: ignore[override]
        super().on_message_begin()
        self._arm(self.HEADER_TIMEOUT)

    def on_headers_complete(self) -> None:  # type: ignore[override]
        super().on_headers_complete()
        self._arm(self.BODY_TIMEOUT)

    def on_message_complete(self) -> None:  # type: ignore[override]
        self._disarm()
        super().on_message_complete()

    # ------------------------------------------------------------------ timers

    def _arm(self, seconds: float) -> None:
        self._disarm()
        if seconds > 0:
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = getattr(self, "cycle", None)
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if not answering:
            self.transport.write(_TIMEOUT_RESPONSE % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))
        self.transport.close()
