"""uvicorn's HTTP protocol with TCP_NODELAY on every accepted connection.

With --workers > 1 uvicorn binds the listening socket itself, and asyncio then
does not set TCP_NODELAY on accepted sockets; Nagle's algorithm meets the
client's delayed ACK and every keep-alive request after the first waits ~40 ms
(uvicorn issue 3149). Setting the option ourselves removes the stall.
"""

from __future__ import annotations

import socket

try:  # the fast parser when installed (uvicorn[standard])
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - pure-Python fallback
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base


class NoDelayHTTPProtocol(_Base):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        super().connection_made(transport)
