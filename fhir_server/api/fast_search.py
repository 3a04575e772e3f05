"""`GET [base]/Type?params` answered in front of the router, on the event loop.

The search portals run most (a patient's appointments, free slots, a
questionnaire's responses) is a type search with plain parameters. Through
FastAPI's routing and the thread pool its Python CPU per request is several
times the database's. This ASGI layer answers the plain form - no modifiers,
chains or `_has`, no `_include`/`_revinclude`/`_format`, no `Prefer`
header - with the statements the search engine plans (the caller's access
criteria from `security.authz.visibility` are part of them, exactly as on the
normal path) run through the event-loop reader (`search.fast`). Everything
else, every error included, goes on to the app, which answers as before; tests
hold both paths to the same Bundles, also for restricted tokens.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import FhirError
from ..rest import interactions as ix
from ..rest.context import RequestContext
from ..search import custom
from ..search.fast import NotFast, run_search
from ..security.authz import ANONYMOUS
from . import http
from .fast_read import FAST_READER

log = logging.getLogger(__name__)

# Headers that ask for more than the plain search (Prefer: handling=lenient, conditional reads).
_DEFER_HEADERS = frozenset((b"if-none-match", b"if-modified-since", b"if-match", b"prefer"))
# Result parameters handled here; any other `_x` (and every `name:modifier`, `a.b`) goes to the app.
_PLAIN_CONTROLS = frozenset(("_id", "_lastUpdated", "_tag", "_profile", "_security", "_count", "_total",
                             "_cursor", "_summary", "_elements", "_sort"))


def plain_params(query_string: bytes) -> list[tuple[str, str]] | None:
    """The query's (name, value) pairs, decoded as Starlette decodes them, or None
    when one of them is not for this path."""
    params = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    for name, _ in params:
        if ":" in name or "." in name or (name.startswith("_") and name not in _PLAIN_CONTROLS):
            return None
    return params


class FastSearch:
    """ASGI middleware in front of the FastAPI router (inside authentication and the access log)."""

    def __init__(self, app, base_path: str) -> None:
        self.app = app
        self.base_path = base_path.rstrip("/")
        self.prefix = self.base_path + "/"

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["query_string"]:
            reader = (scope.get("state") or {}).get(FAST_READER)
            if reader is not None and await self._try(reader, scope, receive, send):
                return
        await self.app(scope, receive, send)

    async def _try(self, reader, scope, receive, send) -> bool:
        """Answer the request and return True, or return False to let the app answer."""
        path: str = scope["path"]
        if not path.startswith(self.prefix):
            return False
        res_type = path[len(self.prefix):]
        if not res_type[:1].isupper() or not res_type.isalnum() or res_type in ("Binary", "AuditEvent"):
            return False
        accept = ""
        for k, v in scope["headers"]:
            if k in _DEFER_HEADERS:
                return False
            if k == b"accept" and not accept:
                accept = v.decode("latin-1")
        params = plain_params(scope["query_string"])
        if params is None:
            return False
        request = Request(scope, receive)
        try:
            if custom.refresh_due():  # every few seconds: another process may have activated a parameter
                db = getattr(scope.get("app"), "state", None) and scope["app"].state.db
                if db is None:
                    return False
                await run_in_threadpool(db.run_read, custom.maybe_refresh)
            media = http.negotiate(None, accept)
            state = scope.get("state") or {}
            ctx = RequestContext(base_url=http.base_url(request, self.base_path),
                                 principal=state.get("principal") or ANONYMOUS, request_id=state.get("request_id", ""))
            req = ix.search_request(ctx, res_type, params)
            body = await run_search(reader, req)
        except FhirError as exc:
            if exc.status != 503:
                return False  # the app answers it, with its own wording and headers
            await http.error_response(request, exc)(scope, receive, send)
            return True
        except NotFast:
            return False
        except Exception:  # a driver's complaint the engine's path would not meet: that path answers
            log.warning("fast search of %s fell back to the engine", res_type, exc_info=True)
            return False
        await http.send_fhir_body(send, body, media)
        return True
