"""Checks on the request line before any route sees it.

A path or query that holds characters no FHIR string may hold (control
characters other than tab/CR/LF, such as U+0000, or percent-encoded bytes
that are not UTF-8) is answered 400 here, the same on every database
(PostgreSQL text cannot hold U+0000; SQLite would store it). This covers ids,
search values, `_jobId` and every other parameter in one place. Bodies are
checked where they are parsed (`model.jsonguard`).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from ..errors import FhirError
from ..model.jsonguard import bad_char_message
from . import http


def check_request_line(path: str, query_string: bytes) -> None:
    """400 (`value`) naming the part of the URL that holds what FHIR strings may not."""
    why = bad_char_message(path)
    if why is not None:
        raise FhirError.of(400, "value", f"The URL path {why}")
    if not query_string:
        return
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise FhirError.of(400, "value", "The query string holds percent-encoded bytes that are not UTF-8") from None
    except ValueError:
        raise FhirError.of(400, "value", "The query string is malformed") from None
    for name, value in pairs:
        why = bad_char_message(name)
        if why is not None:
            raise FhirError.of(400, "value", f"A query parameter name {why}")
        why = bad_char_message(value)
        if why is not None:
            raise FhirError.of(400, "value", f"The value of '{name}' {why}", name)


class RequestLineGuard:
    """ASGI middleware: `check_request_line` for every HTTP request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            try:
                check_request_line(scope["path"], scope.get("query_string", b""))
            except FhirError as exc:
                await http.error_response(Request(scope, receive), exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
