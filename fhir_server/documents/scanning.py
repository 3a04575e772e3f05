"""Optional virus scan of uploads by a ClamAV daemon (clamd), over its socket.

Configured by `FHIR_SERVER_CLAMD_ADDRESS`: ``unix:/run/clamav/clamd.ctl`` or
``host:port`` (empty: no scanning). The bytes are streamed to clamd with the
INSTREAM command while they are being stored (clamd(8): each chunk is a 4-byte
big-endian length and the bytes, a zero length ends the stream; the reply is
``stream: OK`` or ``stream: <signature> FOUND``), so scanning adds no pass over
the file. A found signature is a 422 and nothing is stored; clamd unreachable
or failing is a 503 (uploads are refused rather than stored unscanned).

The protocol is a dozen lines; the Python clamd client packages on the
registry have been unmaintained since 2014/2017, so it is spoken here.
"""

from __future__ import annotations

import socket
import struct

from ..errors import FhirError

_TIMEOUT = 60.0


def _connect(address: str) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address[len("unix:"):]
    else:
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
        target = (host.strip("[]") or "127.0.0.1", int(port))
    sock.settimeout(_TIMEOUT)
    sock.connect(target)
    return sock


def _unavailable(exc: Exception) -> FhirError:
    err = FhirError.of(503, "transient", f"The virus scanner is not available ({exc}); nothing was stored, try again later")
    err.headers["Retry-After"] = "30"
    return err


class ClamdScan:
    """One INSTREAM session: `feed` chunks as they arrive, then `verdict()`."""

    def __init__(self, address: str):
        self.address = address
        try:
            self.sock = _connect(address)
            self.sock.sendall(b"zINSTREAM\0")
        except OSError as exc:
            raise _unavailable(exc) from exc

    def feed(self, chunk: bytes) -> None:
        try:
            self.sock.sendall(struct.pack("!L", len(chunk)) + chunk)
        except OSError as exc:  # clamd hangs up when its StreamMaxLength is passed
            self.close()
            raise _unavailable(exc) from exc

    def verdict(self) -> None:
        """Raise 422 when a signature was found, 503 when clamd failed; None when clean."""
        try:
            self.sock.sendall(struct.pack("!L", 0))
            reply = b""
            while not reply.endswith(b"\0"):
                part = self.sock.recv(4096)
                if not part:
                    break
                reply += part
        except OSError as exc:
            raise _unavailable(exc) from exc
        finally:
            self.close()
        text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
        if text.endswith("OK"):
            return
        if text.endswith("FOUND"):
            signature = text.split(":", 1)[-1].rsplit(" ", 1)[0].strip()
            raise FhirError.of(422, "security", f"The upload was refused: the virus scanner found {signature}; nothing was stored")
        raise _unavailable(RuntimeError(text or "no answer"))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def start_scan(address: str | None) -> ClamdScan | None:
    return ClamdScan(address) if address else None
