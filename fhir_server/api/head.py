"""HEAD answered as GET without the body (RFC 9110 section 9.3.2).

HTTP asks every general-purpose server to support HEAD on what it serves with GET;
clients and caches use it to check that a resource exists or has changed (ETag,
Last-Modified, Content-Length) without downloading it. This outermost layer runs the
request as a GET - so authentication, access rules and the access log treat it as
the read it is - and passes on the status and headers, dropping the body.
"""

from __future__ import annotations


class HeadAsGet:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message):
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
