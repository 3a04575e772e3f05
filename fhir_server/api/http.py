"""HTTP edge helpers: content negotiation, Prefer, base URL, FHIR responses."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from ..errors import FhirError, Issue, operation_outcome
from ..model import jsonio
from ..rest.context import Outcome, RequestContext
from ..security.authz import ANONYMOUS
from .forwarding import DEFAULT_POLICY

FHIR_JSON = "application/fhir+json"
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir", "text/json"}
_XML_FORMATS = {"xml", "application/xml", "application/fhir+xml", "application/xml+fhir", "text/xml", "html", "text/html"}
# Parameters every interaction accepts and none may treat as a search criterion.
FORMAT_PARAMS = ("_format", "_pretty")


def response_media_type(request: Request) -> str:
    """The JSON flavour to answer with; 406 when only XML is acceptable."""
    return negotiate(request.query_params.get("_format"), request.headers.get("accept", ""))


def negotiate(fmt: str | None, accept: str) -> str:
    """The media type for a `_format` parameter and an Accept header (406 when neither allows JSON)."""
    if fmt is not None:
        f = fmt.split(";")[0].strip().lower()
        if f in _JSON_FORMATS:
            return "application/json" if f == "application/json" else FHIR_JSON
        raise FhirError.of(406, "not-supported", f"_format '{fmt}' is not supported: this server speaks JSON (application/fhir+json)", "_format")
    if not accept:
        return FHIR_JSON
    kinds = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    if any(k in ("*/*", "application/*", "application/fhir+json", "application/json+fhir") for k in kinds):
        return FHIR_JSON
    if "application/json" in kinds or "text/json" in kinds:
        return "application/json"
    if all(k in _XML_FORMATS for k in kinds if k):
        raise FhirError.of(406, "not-supported", f"Accept '{accept}' is not supported: this server speaks JSON (application/fhir+json)")
    return FHIR_JSON


def base_url(request: Request, base_path: str) -> str:
    """The FHIR base as the client sees it: the configured public base URL, or
    the request's, with X-Forwarded-* believed from trusted proxies only (see forwarding.py)."""
    policy = getattr(request.app.state, "forwarding", None) if "app" in request.scope else None
    return (policy or DEFAULT_POLICY).base_url(request, base_path)


def parse_prefer(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in request.headers.get("prefer", "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        out[key.strip().lower()] = value.strip().strip('"')
    return out


def make_context(request: Request, base_path: str) -> RequestContext:
    prefer = parse_prefer(request)
    ret = prefer.get("return")
    if ret and ret not in ("minimal", "representation", "OperationOutcome"):
        ret = None
    ctx = RequestContext(base_url=base_url(request, base_path), prefer_return=ret, lenient=prefer.get("handling") == "lenient")
    ctx.principal = getattr(request.state, "principal", ANONYMOUS)
    ctx.request_id = getattr(request.state, "request_id", ctx.request_id)
    return ctx


def pretty_requested(request: Request) -> bool:
    return request.query_params.get("_pretty", "false").lower() == "true"


def fhir_response(request: Request, body: bytes | None, status: int = 200, headers: dict | None = None) -> Response:
    media = response_media_type(request)
    if body is not None and pretty_requested(request):
        body = jsonio.dumps(jsonio.parse_preserving(body), pretty=True)
    headers = {k: v for k, v in (headers or {}).items() if v}
    if body is None:
        return Response(status_code=status, headers=headers)
    return Response(content=body, status_code=status, headers=headers, media_type=f"{media}; charset=utf-8")


def outcome_response(request: Request, out: Outcome) -> Response:
    headers = dict(out.headers)
    if out.etag and "ETag" not in headers:
        headers["ETag"] = out.etag
    if out.last_modified and "Last-Modified" not in headers:
        headers["Last-Modified"] = out.last_modified
    return fhir_response(request, out.body, out.status, headers)


def error_response(request: Request, exc: FhirError) -> Response:
    body = jsonio.dumps(operation_outcome(exc.issues or [Issue("error", "exception", "Error")]))
    try:
        media = response_media_type(request)
    except FhirError:
        media = FHIR_JSON
    return Response(content=body, status_code=exc.status, headers=exc.headers, media_type=f"{media}; charset=utf-8")


async def send_fhir_body(send, body: bytes, media: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """A 200 answer with `body` straight on the ASGI `send` (the fast read and search paths,
    which answer in front of the router without building a Response)."""
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", f"{media}; charset=utf-8".encode()),
        *headers,
    ]})
    await send({"type": "http.response.body", "body": body})
