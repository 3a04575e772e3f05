"""One access-log line per request.

Each line gives the method, the path (never the query string: search values
such as names, birth dates and national identifiers are personal data), the
status, the duration in milliseconds, the request id (as echoed in
X-Request-Id) and the client address. `FHIR_SERVER_ACCESS_LOG=text` (default)
writes `GET /fhir/Patient/123 200 1.4ms id=... client=...`; `json` writes one
JSON object per line (ts, method, path, status, duration_ms, request_id,
client); `off` writes nothing. Lines go to the `fhir_server.access` logger,
which writes to stderr unless the deployment configures it otherwise.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone

import orjson

LOGGER_NAME = "fhir_server.access"


def access_logger() -> logging.Logger:
    """The access logger; given a plain stderr handler if nobody configured one
    (uvicorn's worker processes configure only uvicorn's own loggers)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


class AccessLog:
    """ASGI middleware; place it inside RequestIdMiddleware so the id is known."""

    def __init__(self, app, fmt: str = "text"):
        if fmt not in ("off", "text", "json"):
            raise ValueError(f"access log format must be off, text or json, not {fmt!r}")
        self.app = app
        self.fmt = fmt
        self.logger = access_logger()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.fmt == "off":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 0

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self._log(scope, status or 500, (time.perf_counter() - started) * 1000)

    def _log(self, scope, status: int, ms: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        rid = (scope.get("state") or {}).get("request_id", "")
        client = scope.get("client")
        peer = client[0] if client else ""
        path = scope.get("root_path", "") + scope["path"]
        if self.fmt == "json":
            line = orjson.dumps({
                "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "method": scope["method"], "path": path, "status": status,
                "duration_ms": round(ms, 2), "request_id": rid, "client": peer,
            }).decode()
        else:  # one line per request: a path's CR, LF or tab (decoded from %0D, %0A, %09) is written escaped
            if not path.isprintable():
                path = path.encode("unicode_escape").decode("ascii")
            line = f"{scope['method']} {path} {status} {ms:.1f}ms id={rid} client={peer}"
        self.logger.info(line)
