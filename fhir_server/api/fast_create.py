"""`POST [base]/Type` (create) answered in front of the router.

A create's own work (validation, the write transaction, its search index rows and
AuditEvent) is the same whichever way the request arrives; what FastAPI adds around
it - route matching over every route, dependency solving, the exception middleware's
task - is a tenth of the server's CPU per create. This ASGI layer sits where the fast
read and search paths sit (inside authentication, the access log and the audit edge)
and runs exactly the steps of the router's create handler (`api.app`, `type_level`):
the type segment checked (404), the body read and bounded (413), its media type
(415) and JSON (400) checked, validation before the transaction, then
`interactions.create` in one write transaction on a worker thread, answered with the
same `http.outcome_response`. Errors are answered as the app's handlers answer them:
FhirError with its OperationOutcome, a database failure as `storage.faults.classify`
says (anything else rises to the server-error handler, a 500, as before).

Requests this path does not take go on to the app untouched: a query string, a
`$operation`, Binary (raw uploads and content negotiation live in api/binary.py), a
path that is not exactly `[base]/Type`. `tests/api/test_fast_create.py` holds the two
paths to the same answers over valid and invalid requests.
"""

from __future__ import annotations

import logging

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from ..errors import FhirError
from ..rest import interactions as ix
from ..storage.faults import classify, database_exception_types
from . import http

log = logging.getLogger("fhir_server")

# Off: every create goes through the router (tests compare the two paths).
ENABLED = True


class FastCreate:
    """ASGI middleware in front of the FastAPI router (inside authentication and the access log)."""

    def __init__(self, app, base_path: str, settings, db) -> None:
        self.app = app
        self.base_path = base_path.rstrip("/")
        self.prefix = self.base_path + "/"
        self.settings = settings
        self.db = db
        self.db_errors = database_exception_types()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and not scope["query_string"] and ENABLED:
            path: str = scope["path"]
            if path.startswith(self.prefix):
                res_type = path[len(self.prefix):]
                # `$op` and lower-case segments fail isupper; `Type/...` fails isalnum
                if res_type[:1].isupper() and res_type.isalnum() and res_type != "Binary":
                    await self._create(res_type, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _create(self, res_type: str, scope, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await self._answer(request, res_type)
        except FhirError as exc:
            response = http.error_response(request, exc)
        except ClientDisconnect:
            response = Response(status_code=400)  # as the app: nobody is left to answer
        except self.db_errors as exc:
            answer = classify(exc)  # 409/503/400, never the database's own text
            if answer is None:
                raise
            rid = (scope.get("state") or {}).get("request_id", "?")
            log.warning("request %s: database failure answered %s: %s", rid, answer.status,
                        (str(exc).splitlines() or [type(exc).__name__])[0][:200])
            response = http.error_response(request, answer)
        await response(scope, receive, send)

    async def _answer(self, request: Request, res_type: str) -> Response:
        """The router's create, step by step (api.app.type_level, POST)."""
        from .app import _body, _parse_resource_body

        ix.check_type(res_type)
        c = http.make_context(request, self.base_path)
        body = await _body(request, self.settings)
        parsed = _parse_resource_body(request, body)
        ix.prevalidate(res_type, parsed)
        db = self.db
        if_none_exist = request.headers.get("if-none-exist")

        def run():
            with db.write() as conn:
                return ix.create(conn, c, res_type, parsed, if_none_exist)

        out = await run_in_threadpool(run)
        return http.outcome_response(request, out)
