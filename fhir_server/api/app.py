"""The FastAPI application: FHIR REST routes mapped onto the interactions."""

from __future__ import annotations

import logging
import re
from email.utils import parsedate_to_datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import Settings
from ..errors import FhirError
from ..ids import new_time_ordered_hex
from ..model import jsonio
from ..rest import history as history_mod
from ..rest import interactions as ix
from ..rest import limits
from ..rest.capabilities import capability_statement
from ..rest.operations import OperationCall, dispatch
from ..rest.projection import project, validate_summary
from ..storage.database import Database
from ..storage.faults import classify, database_exception_types
from . import binary, http
from .fast_create import FastCreate
from .fast_read import FAST_READER, FastReads
from .fast_search import FastSearch
from .head import HeadAsGet
from .access_log import AccessLog
from .compression import TextCompression
from .docs import attach_docs
from .forwarding import ForwardingPolicy
from .guards import RequestLineGuard
from .health import attach_health

log = logging.getLogger("fhir_server")

GZIP_MINIMUM_BYTES = 16 * 1024
# Only text formats are compressed (api/compression.py): raw Binary downloads keep
# their Content-Length (and byte ranges); documents and photos are compressed already.
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/fhir+json", "application/json")
WRITE_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")


def _content_type(request: Request) -> str:
    """The media type of the body, lower-case, without parameters; 415 when a `charset`
    parameter names anything but UTF-8 (R4 http.html, "Content Types and encodings":
    UTF-8 SHALL be used for FHIR instances, so another encoding is not one we read)."""
    ctype, _, params = request.headers.get("content-type", "").partition(";")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise FhirError.of(415, "not-supported", f"The body is declared as charset={value.strip()}: "
                               "FHIR content must be sent in UTF-8 (charset=utf-8)")
    return ctype.strip().lower()


async def _body(request: Request, settings: Settings) -> bytes:
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        raise FhirError.of(413, "too-costly", f"The request body is larger than {settings.max_body_bytes} bytes")
    return body


def _parse_resource_body(request: Request, body: bytes) -> ix.ParsedResource:
    ctype = _content_type(request)
    if ctype and ctype not in WRITE_TYPES:
        raise FhirError.of(415, "not-supported", f"Content-Type '{ctype}' is not supported: send application/fhir+json")
    return ix.ParsedResource.from_bytes(body)


def _query(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items() if k not in http.FORMAT_PARAMS]


def _check_type_segment(res_type: str) -> None:
    if not res_type[:1].isupper():
        raise FhirError.of(404, "not-found", f"Unknown path segment '{res_type}': not a resource type")
    ix.check_type(res_type)


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or Settings()
    db = db or Database(settings.resolved_database_url())
    off = None if settings.telemetry else {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="FHIR R4 server", docs_url=None, redoc_url=None, openapi_url="/openapi.json", telemetry=off)
    attach_docs(app, app.title)  # Swagger UI from the installed package, not a CDN
    app.state.settings = settings
    app.state.db = db
    base = settings.base_path.rstrip("/")

    # ------------------------------------------------------------------ plumbing

    limits.configure(settings)
    app.state.forwarding = ForwardingPolicy(settings.public_base_url, settings.trusted_proxies)
    app.add_middleware(FastReads, base_path=base)
    app.add_middleware(FastSearch, base_path=base)  # plain type searches on the event loop
    app.add_middleware(FastCreate, base_path=base, settings=settings, db=db)  # POST [base]/Type without the router
    from ..auth import protect

    protect(app, db, settings)  # bearer tokens (and CORS) in front of everything but the open paths
    app.add_middleware(RequestLineGuard)
    # large responses (the CapabilityStatement, search pages, exports) compressed for clients that accept gzip
    # (text formats only: binary content is left as it is, with its Content-Length)
    app.add_middleware(TextCompression, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=5)
    app.add_middleware(AccessLog, fmt=settings.access_log)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(HeadAsGet)  # outermost: a HEAD is the GET without its body
    attach_health(app, db)
    _limit_request_threads(app)
    _attach_fast_reader(app, db, settings.search_timeout_seconds)

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError):
        return http.error_response(request, exc)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # the client closed the connection (or was cut off by the body deadline): nothing to answer
        return Response(status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return http.error_response(request, FhirError.of(400, "invalid", f"Invalid request: {exc.errors()}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return http.error_response(request, FhirError.of(exc.status_code, code, str(exc.detail)))

    async def database_failure(request: Request, exc: Exception):
        answer = classify(exc)  # 409/503/400, never the database's own text
        if answer is None:
            raise exc
        rid = getattr(request.state, "request_id", "?")
        log.warning("request %s: database failure answered %s: %s", rid, answer.status, (str(exc).splitlines() or [type(exc).__name__])[0][:200])
        return http.error_response(request, answer)

    for exc_type in database_exception_types():
        app.add_exception_handler(exc_type, database_failure)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        rid = getattr(request.state, "request_id", "?")
        log.exception("unexpected error in request %s", rid)
        return http.error_response(
            request, FhirError.of(500, "exception", f"Internal error (request id {rid}); the failure was logged and nothing was written")
        )

    def ctx(request: Request):
        return http.make_context(request, base)

    async def in_write(fn, *args):
        def run():
            with db.write() as conn:
                return fn(conn, *args)

        return await run_in_threadpool(run)

    async def in_read(fn, *args):
        return await run_in_threadpool(db.run_read, fn, *args)

    # ------------------------------------------------------------------ system level

    @app.get(base + "/metadata", operation_id="capabilities", summary="The CapabilityStatement (capabilities interaction)")
    async def metadata(request: Request):
        c = ctx(request)
        security = getattr(app.state, "capability_security", None)  # set by fhir_server.auth
        body = capability_statement(c.base_url, security(c.base_url) if security else None)
        summary = validate_summary(request.query_params.get("_summary"))
        elements = request.query_params.get("_elements")
        if summary == "count":
            raise FhirError.of(400, "invalid", "_summary=count applies to searches, not to the CapabilityStatement", "_summary")
        if summary or elements:
            statement = jsonio.parse_plain(body)
            body = jsonio.dumps(project(statement, summary, elements.split(",") if elements else None))
        return http.fhir_response(request, body)

    @app.get(base + "/_history", operation_id="history-system", summary="History of all resources")
    async def system_history(request: Request):
        c = ctx(request)
        body = await in_read(history_mod.history, c, None, None, _query(request))
        return http.fhir_response(request, body)

    @app.post(base, operation_id="batch-transaction", summary="Process a batch or transaction Bundle")
    @app.post(base + "/", include_in_schema=False)
    async def system_bundle(request: Request):
        from ..rest.bundles import process_bundle

        c = ctx(request)
        body = await _body(request, settings)
        parsed = _parse_resource_body(request, body)
        out = await run_in_threadpool(process_bundle, db, c, parsed, settings)
        return http.outcome_response(request, out)

    @app.get(base, operation_id="search-system", summary="Search across all resource types")
    @app.get(base + "/", include_in_schema=False)
    async def system_search(request: Request):
        c = ctx(request)
        body = await in_read(ix.search, c, None, _query(request))
        return http.fhir_response(request, body)

    async def run_operation(request: Request, name: str, res_type: str | None, res_id: str | None):
        c = ctx(request)
        body = await _body(request, settings) if request.method in ("POST", "PUT") else b""
        if body and "json" in request.headers.get("content-type", ""):
            _content_type(request)  # 415 for a JSON body declared in another charset than UTF-8
        call = OperationCall(
            name=name[1:],
            method=request.method,
            ctx=c,
            db=db,
            settings=settings,
            res_type=res_type,
            res_id=res_id,
            params=_query(request),
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        result = await run_in_threadpool(dispatch, call)
        if isinstance(result, Response):
            return result
        return http.outcome_response(request, result)

    # ------------------------------------------------------------------ type level

    @_per_method(app, base + "/{res_type}", {
        "GET": ("search-type", "Search a resource type (or run a type-level $operation)"),
        "POST": ("create", "Create a resource (conditional with If-None-Exist), or run a type-level $operation"),
        "PUT": ("conditional-update", "Update the resource a search selects"),
        "PATCH": ("conditional-patch", "Patch the resource a search selects"),
        "DELETE": ("conditional-delete", "Delete the resource a search selects"),
    })
    async def type_level(request: Request, res_type: str):
        if res_type.startswith("$"):
            return await run_operation(request, res_type, None, None)
        _check_type_segment(res_type)
        c = ctx(request)
        method = request.method
        if method == "GET":
            return await _search(request, c, res_type, _query(request))
        if res_type == "Binary" and method == "POST" and binary.is_raw_upload(request):
            return await binary.raw_write(request, c, db)
        body = await _body(request, settings)
        if method == "POST":
            parsed = _parse_resource_body(request, body)
            ix.prevalidate(res_type, parsed)
            out = await in_write(ix.create, c, res_type, parsed, request.headers.get("if-none-exist"))
            return http.outcome_response(request, out)
        query = request.url.query
        query = "&".join(p for p in query.split("&") if p and not p.startswith(("_format=", "_pretty=")))
        if method == "PUT":
            parsed = _parse_resource_body(request, body)
            out = await in_write(ix.conditional_update, c, res_type, query, parsed, request.headers.get("if-match"))
        elif method == "PATCH":
            patch_body = _patch_body(request, body)
            out = await in_write(ix.conditional_patch, c, res_type, query, patch_body, _content_type(request), request.headers.get("if-match"))
        else:
            out = await in_write(ix.conditional_delete, c, res_type, query)
        return http.outcome_response(request, out)

    async def _search(request: Request, c, res_type: str, params: list[tuple[str, str]], compartment=None):
        body = await in_read(ix.search, c, res_type, params, compartment)
        return http.fhir_response(request, body)

    @app.post(base + "/{res_type}/_search", operation_id="search-type-post", summary="Search a resource type, parameters in a form body")
    async def post_search(request: Request, res_type: str):
        _check_type_segment(res_type)
        c = ctx(request)
        ctype = _content_type(request)
        if ctype != "application/x-www-form-urlencoded":
            raise FhirError.of(415, "not-supported", "POST _search takes an application/x-www-form-urlencoded body")
        form = await request.form()
        params = _query(request) + [(k, str(v)) for k, v in form.multi_items() if k not in http.FORMAT_PARAMS]
        return await _search(request, c, res_type, params)

    @app.get(base + "/{res_type}/_history", operation_id="history-type", summary="History of a resource type")
    async def type_history(request: Request, res_type: str):
        _check_type_segment(res_type)
        c = ctx(request)
        body = await in_read(history_mod.history, c, res_type, None, _query(request))
        return http.fhir_response(request, body)

    # ------------------------------------------------------------------ instance level

    @_per_method(app, base + "/{res_type}/{res_id}", {
        "GET": ("read", "Read the current version of a resource (or run an instance-level $operation)"),
        "PUT": ("update", "Update (or create) a resource by id"),
        "PATCH": ("patch", "Patch a resource (JSON Patch, JSON merge patch, FHIRPath Patch)"),
        "DELETE": ("delete", "Delete a resource"),
        "POST": ("operation-type", "Run a type-level $operation"),
    })
    async def instance_level(request: Request, res_type: str, res_id: str):
        if res_id.startswith("$"):
            _check_type_segment(res_type)
            return await run_operation(request, res_id, res_type, None)
        _check_type_segment(res_type)
        c = ctx(request)
        method = request.method
        if res_type == "Binary" and (binary.handles_read(request) if method == "GET" else method == "PUT" and binary.is_raw_upload(request)):
            return await (binary.read(request, c, db, res_id) if method == "GET" else binary.raw_write(request, c, db, res_id))
        if method == "GET":
            return await _read(request, c, res_type, res_id)
        if method == "POST":
            raise FhirError.of(405, "not-supported", "POST to a resource instance is not a FHIR interaction; use PUT to update")
        if method == "DELETE":
            out = await in_write(ix.delete, c, res_type, res_id, request.headers.get("if-match"))
            return http.outcome_response(request, out)
        body = await _body(request, settings)
        if method == "PUT":
            parsed = _parse_resource_body(request, body)
            ix.prevalidate(res_type, parsed)
            out = await in_write(ix.update, c, res_type, res_id, parsed, request.headers.get("if-match"))
        else:
            patch_body = _patch_body(request, body)
            out = await in_write(ix.patch, c, res_type, res_id, patch_body, _content_type(request), request.headers.get("if-match"))
        return http.outcome_response(request, out)

    async def _read(request: Request, c, res_type: str, res_id: str):
        summary = validate_summary(request.query_params.get("_summary"))
        elements = request.query_params.get("_elements")
        reader = getattr(request.state, FAST_READER, None)
        if reader is not None and not ix.needs_visibility_check(c, res_type):
            ix.check_read(c, res_type, res_id)
            out = ix.read_outcome(res_type, res_id, await reader.read_current(res_type, res_id))
        else:
            out = await in_read(ix.read, c, res_type, res_id)
        return _conditional_read_response(request, out, summary, elements)

    @app.get(base + "/{res_type}/{res_id}/_history", operation_id="history-instance", summary="History of one resource")
    async def instance_history(request: Request, res_type: str, res_id: str):
        _check_type_segment(res_type)
        c = ctx(request)
        body = await in_read(history_mod.history, c, res_type, res_id, _query(request))
        return http.fhir_response(request, body)

    @app.get(base + "/{res_type}/{res_id}/_history/{vid}", operation_id="vread", summary="Read one version of a resource")
    async def vread(request: Request, res_type: str, res_id: str, vid: str):
        _check_type_segment(res_type)
        c = ctx(request)
        if res_type == "Binary" and binary.handles_read(request):
            return await binary.read(request, c, db, res_id, vid)
        out = await in_read(ix.vread, c, res_type, res_id, vid)
        summary = validate_summary(request.query_params.get("_summary"))
        return _conditional_read_response(request, out, summary, request.query_params.get("_elements"))

    @_per_method(app, base + "/{res_type}/{res_id}/{third}", {
        "GET": ("search-compartment", "Search a compartment (or run an instance-level $operation)"),
        "POST": ("operation-instance", "Run an instance-level $operation"),
        "DELETE": ("operation-instance-delete", "Cancel via an instance-level $operation (e.g. $export-poll-status)"),
    })
    async def instance_third(request: Request, res_type: str, res_id: str, third: str):
        _check_type_segment(res_type)
        if third.startswith("$"):
            return await run_operation(request, third, res_type, res_id)
        if request.method != "GET":
            raise FhirError.of(405, "not-supported", f"{request.method} is not supported on {request.url.path}")
        _check_type_segment(third)
        c = ctx(request)
        return await _search(request, c, third, _query(request), compartment=(res_type, res_id))

    return app


def _per_method(app: FastAPI, path: str, methods: dict[str, tuple[str, str]]):
    """Register one handler for several methods as one route per method, each
    with its own operation id and summary (FastAPI gives a multi-method route
    one operation id for all its methods)."""

    def register(fn):
        for method, (operation_id, summary) in methods.items():
            app.add_api_route(path, fn, methods=[method], operation_id=operation_id, summary=summary)
        return fn

    return register


_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")


class RequestIdMiddleware:
    """Give every request an id (the client's X-Request-Id or a new one), echoed
    in the response and quoted in error diagnostics. Plain ASGI: the decorator
    form of middleware costs a task and a stream per request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        # the client's id when it is one: 1-200 visible ASCII characters. Another value (60 KB,
        # a tab, bytes that are not ASCII) would be echoed, logged and stored as given, and
        # be too long to find in the access log: the request gets an id of its own instead
        rid = rid.decode("ascii") if rid and len(rid) <= 200 and _VISIBLE_ASCII.fullmatch(rid) else new_time_ordered_hex()
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _limit_request_threads(app: FastAPI) -> None:
    """Run blocking request work on as many threads as there are pooled
    database connections, so requests queue for a thread, not a connection."""
    from contextlib import asynccontextmanager

    import anyio.to_thread

    from ..storage.db import THREADPOOL_SIZE

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADPOOL_SIZE
        async with inner(a) as state:
            yield state

    app.router.lifespan_context = lifespan


def _attach_fast_reader(app: FastAPI, db: Database, search_timeout_seconds: float = 0.0) -> None:
    """Open the event-loop reader for reads by id (asyncpg or sqlite3) with the app's lifespan."""
    from contextlib import asynccontextmanager

    from ..storage.async_reads import reader_for
    from ..storage.db import THREADPOOL_SIZE

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        # Kept in the lifespan state (copied into each request's scope) rather than
        # on app.state: each server running this app (a test client beside a live
        # uvicorn, say) has its own event loop, and a reader belongs to one loop.
        reader = reader_for(db.engine.url.render_as_string(hide_password=False), THREADPOOL_SIZE,
                            search_timeout_seconds=search_timeout_seconds)
        if reader is not None:
            await reader.open()
        try:
            async with inner(a) as state:
                yield {**(state or {}), FAST_READER: reader}
        finally:
            if reader is not None:
                await reader.close()

    app.router.lifespan_context = lifespan


def _patch_body(request: Request, body: bytes) -> Any:
    ctype = _content_type(request)
    if ctype not in PATCH_TYPES:
        raise FhirError.of(
            415,
            "not-supported",
            f"Content-Type '{ctype}' is not a supported patch format: use application/json-patch+json, application/merge-patch+json or a FHIRPath Patch Parameters resource",
        )
    if not body.strip():
        raise FhirError.of(400, "structure", "The patch body is empty")
    return jsonio.parse_preserving(body)


def _conditional_read_response(request: Request, out, summary: str | None, elements: str | None) -> Response:
    inm = request.headers.get("if-none-match")
    if inm and out.etag and inm.strip() in (out.etag, out.etag[2:], "*"):
        return Response(status_code=304, headers={"ETag": out.etag, "Last-Modified": out.last_modified})
    ims = request.headers.get("if-modified-since")
    if ims and out.last_modified:
        try:
            if parsedate_to_datetime(out.last_modified) <= parsedate_to_datetime(ims):
                return Response(status_code=304, headers={"ETag": out.etag, "Last-Modified": out.last_modified})
        except (TypeError, ValueError):
            pass
    if summary or elements:
        resource = jsonio.parse_preserving(out.body)
        out.body = jsonio.dumps(project(resource, summary, elements.split(",") if elements else None))
    return http.outcome_response(request, out)


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory` (one app per worker process).

    What start-up built (modules, models, the search registry, the app: ~200,000 objects)
    lives as long as the process, so it is moved out of the cyclic garbage collector's view
    (`gc.freeze`): each full collection otherwise walked all of it again, ~0.2 s every few
    thousand requests or access-log events (bench/bench_protected_cpu.py --gc-freeze)."""
    import gc

    from ..bootstrap import build_app

    app = build_app()
    gc.collect()
    gc.freeze()
    return app

