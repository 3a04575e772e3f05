"""Asyncio MLLP listener: 0x0B <message> 0x1C 0x0D, many messages per connection.

A bad message never costs the connection: an oversized one is skipped up to
its end block and answered AR (CR in enhanced mode); garbage goes to the
handler, which answers AR.  Handlers do database work, so they run in a
worker thread; messages on one connection are handled in order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Awaitable, Callable, Union

from . import ack as ackmod
from .ack import AckError, build_ack
from .er7 import peek_header

log = logging.getLogger(__name__)

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
HEADER_KEEP = 4096  # bytes of an oversized message kept to answer it

# A handler returns the reply frame (bytes), or a list of frames to send in order.
Handler = Callable[[bytes, object], Union[bytes, list, Awaitable[bytes]]]


def frame(payload: bytes) -> bytes:
    return SB + payload + EB + CR


def oversize_ack(head: bytes, limit: int) -> bytes:
    header = peek_header(head)
    text = build_ack(header, "AR", [AckError(
        ackmod.ERR_INTERNAL, f"Message exceeds the maximum size of {limit} bytes and was not processed", "MSH^1")])
    return text.encode("utf-8")


async def _call(handler: Handler, data: bytes, peer: object) -> bytes:
    if inspect.iscoroutinefunction(handler):
        return await handler(data, peer)
    result = await asyncio.to_thread(handler, data, peer)
    if inspect.isawaitable(result):
        result = await result
    return result or b""


def _connection_handler(handler: Handler, max_message_size: int):
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        buf = bytearray()
        in_msg = False
        oversized = False
        head = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    if not in_msg:
                        start = buf.find(SB)
                        if start < 0:
                            buf.clear()  # noise between frames
                            break
                        del buf[: start + 1]
                        in_msg, oversized, head = True, False, b""
                    end = buf.find(EB + CR)
                    if end < 0:
                        if len(buf) > max_message_size or oversized:
                            if not oversized:
                                head = bytes(buf[:HEADER_KEEP])
                                oversized = True
                            # Keep only a tail that might hold a split end block.
                            del buf[:-1]
                        break
                    data = bytes(buf[:end])
                    del buf[: end + 2]
                    in_msg = False
                    if oversized or len(data) > max_message_size:
                        reply = oversize_ack(head or data[:HEADER_KEEP], max_message_size)
                        log.warning("MLLP: oversized message from %s skipped", peer)
                    else:
                        try:
                            reply = await _call(handler, data, peer)
                        except Exception as exc:  # the connection survives a handler bug
                            log.exception("MLLP handler failed")
                            reply = build_ack(peek_header(data), "AE", [AckError(
                                ackmod.ERR_INTERNAL, f"Internal error: {exc}")]).encode("utf-8")
                    oversized = False
                    for one in ([reply] if isinstance(reply, (bytes, bytearray)) else reply or []):
                        if one:
                            writer.write(frame(bytes(one)))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
                await writer.wait_closed()
            except Exception:  # pragma: no cover - peer already gone
                pass

    return on_connection


async def start_mllp_server(
    host: str, port: int, handler: Handler, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, reuse_port: bool = False
) -> asyncio.Server:
    """Start listening and return the server (port 0 picks a free one: server.sockets[0])."""
    return await asyncio.start_server(_connection_handler(handler, max_message_size), host, port,
                                      limit=max(65536, HEADER_KEEP), reuse_port=reuse_port or None)


async def serve_mllp(host: str, port: int, handler: Handler, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
    """Serve until cancelled."""
    server = await start_mllp_server(host, port, handler, max_message_size)
    log.info("MLLP listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
    async with server:
        await server.serve_forever()


# ----------------------------------------------------------------------------- client side


def send_mllp(host: str, port: int, message: str | bytes, timeout: float = 10.0) -> str:
    """Blocking: send one message and return the ACK text (used by the outbox and tests)."""
    import socket

    payload = message.encode("utf-8") if isinstance(message, str) else message
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(frame(payload))
        return read_frame(sock).decode("utf-8", "replace")


def read_frame(sock) -> bytes:
    buf = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the end of the MLLP frame")
        buf += chunk
        end = buf.find(EB + CR)
        if end >= 0:
            start = buf.find(SB)
            return bytes(buf[start + 1: end] if 0 <= start < end else buf[:end])
