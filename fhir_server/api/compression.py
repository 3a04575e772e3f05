"""gzip for large responses in FHIR's text formats, never for binary content.

Starlette's GZipMiddleware compresses every response above a size whose
content type is not on its exclusion list. Binary content (a `Binary`
download, an image, a PDF) is often compressed already, and compressing a
stream drops its Content-Length and costs CPU for nothing. Here only the
text formats the server speaks (FHIR JSON, NDJSON, `text/*`) are offered to
the compressor: any other response is marked `Content-Encoding: identity` on
its way out of the app, which makes the compressor pass it through, and the
mark is removed again before the response leaves the server.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware

COMPRESSIBLE = ("application/fhir+json", "application/json", "application/json+fhir", "application/fhir+ndjson",
                "application/ndjson", "application/x-ndjson", "application/javascript")
_MARK = (b"content-encoding", b"identity")


def _compressible(headers: list[tuple[bytes, bytes]]) -> bool:
    for k, v in headers:
        if k.lower() == b"content-type":
            media = v.decode("latin-1").partition(";")[0].strip().lower()
            return media.startswith("text/") or media in COMPRESSIBLE
    return False


class _MarkIncompressible:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def mark(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not _compressible(headers) and not any(k.lower() == b"content-encoding" for k, _ in headers):
                    message = {**message, "headers": [*headers, _MARK]}
            await send(message)

        await self.app(scope, receive, mark)


class TextCompression:
    """ASGI middleware: gzip (at `minimum_size` bytes and above) for text formats only."""

    def __init__(self, app, minimum_size: int = 16 * 1024, compresslevel: int = 5):
        self.app = GZipMiddleware(_MarkIncompressible(app), minimum_size=minimum_size, compresslevel=compresslevel)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def unmark(message):
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if _MARK in headers:
                    message = {**message, "headers": [h for h in headers if h != _MARK]}
            await send(message)

        await self.app(scope, receive, unmark)
