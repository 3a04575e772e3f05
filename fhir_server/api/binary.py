"""`Binary` over HTTP as a file (http://hl7.org/fhir/R4/binary.html, section 2.6.2).

- POST [base]/Binary or PUT [base]/Binary/id with a Content-Type that is not a
  FHIR format: the body is the content. It is streamed through the upload
  rules (type sniffing, size limit, optional virus scan) into the blob store,
  then the Binary resource is written (201 + Location, or 200 on update).
  `X-Security-Context: <reference>` sets Binary.securityContext.
- GET [base]/Binary/id (and vread) unless the client explicitly asks for a
  FHIR format (Accept application/fhir+json, application/json..., or
  `_format`): the raw bytes with the stored Content-Type, `X-Security-Context`
  when set, `Accept-Ranges: bytes` and single byte ranges (206, RFC 9110
  section 14); 416 for a range outside the content.
- GET with a FHIR Accept: the resource as JSON with `data` in base64,
  streamed from the store.

Nothing here holds a whole file in memory.
"""

from __future__ import annotations

import base64
import uuid
from typing import Iterator

import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..documents import settings as doc_settings
from ..documents.binary_content import blob_key, content_extension, content_info, decode_data, without_content_extension
from ..documents.ingest import Ingest, new_key
from ..documents.upload_rules import load_rules
from ..errors import FhirError
from ..model import jsonio
from ..rest import interactions as ix
from ..rest.context import Outcome, RequestContext
from ..security import case_consent
from ..security.authz import AccessRequest, authorize
from ..storage import blobs
from . import http

_FHIR_MEDIA = {
    "application/fhir+json", "application/json+fhir", "application/json", "text/json",
    "application/fhir+xml", "application/xml+fhir",
}
_FEED = 1024 * 1024  # bytes handed to the store per thread hop


def _ctype(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_raw_upload(request: Request) -> bool:
    """A write whose body is the content itself (any Content-Type but a FHIR one)."""
    ctype = _ctype(request)
    return bool(ctype) and ctype not in _FHIR_MEDIA


def wants_raw(request: Request) -> bool:
    """A read that did not explicitly ask for a FHIR format gets the raw content."""
    if "_format" in request.query_params:
        return False
    kinds = {a.split(";")[0].strip().lower() for a in request.headers.get("accept", "").split(",")}
    return not (kinds & _FHIR_MEDIA)


def handles_read(request: Request) -> bool:
    """This module answers the read unless _summary/_elements ask for a projection."""
    return "_summary" not in request.query_params and "_elements" not in request.query_params


# ------------------------------------------------------------------ writes


def security_context(header: str) -> str:
    """The `X-Security-Context` header as a Reference.reference: `Type/id` (optionally
    `/_history/<v>`) of a type this server knows, or an absolute http(s) URL; 400 otherwise."""
    import re

    from ..model.definitions import resource_types

    value = header.strip()
    if re.fullmatch(r"https?://\S+/[A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/\d+)?", value):
        return value
    m = re.fullmatch(r"([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/\d+)?", value)
    if m is None or m.group(1) not in resource_types():
        raise FhirError.of(400, "value", f"X-Security-Context '{value[:80]}' is not a reference: use <Type>/<id>, "
                           "e.g. DocumentReference/123 (R4 binary.html)", "Binary.securityContext")
    return value


async def raw_write(request: Request, ctx: RequestContext, db, res_id: str | None = None) -> Response:
    """POST (res_id None) or PUT of raw content; see the module docstring."""
    settings = doc_settings.current()
    rules = load_rules(settings.upload_rules)
    declared = request.headers.get("content-type")
    rule = rules.rule_for(declared)
    if res_id is not None:
        ix.check_id(res_id)
    rid = res_id or str(uuid.uuid4())
    resource: dict = {"resourceType": "Binary"}
    if res_id is not None:
        resource["id"] = res_id
    resource["contentType"] = rule.mime
    security = request.headers.get("x-security-context")
    if security:
        resource["securityContext"] = {"reference": security_context(security)}
    # Refuse before reading a byte: who may write, and a declared length over the limit.
    authorize(ctx.principal, AccessRequest("update" if res_id else "create", "Binary", rid, resource))
    length = request.headers.get("content-length")
    if length and length.isdigit():
        rules.check_size(rule, int(length))
    ingest = Ingest(rules, declared, new_key(rid), settings.clamd_address or None)
    try:
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) >= _FEED:
                data, buf = bytes(buf), bytearray()
                await run_in_threadpool(ingest.feed, data)
        if buf:
            await run_in_threadpool(ingest.feed, bytes(buf))
        info = await run_in_threadpool(ingest.finish)
    except BaseException:
        await run_in_threadpool(ingest.abort)
        raise
    resource["_data"] = {"extension": [content_extension(info)]}
    parsed = ix.ParsedResource.from_preserving(resource)

    def write() -> Outcome:
        ix.prevalidate("Binary", parsed)
        with db.write() as conn:
            if res_id is None:
                return ix.create(conn, ctx, "Binary", parsed, request.headers.get("if-none-exist"), rid)
            return ix.update(conn, ctx, "Binary", res_id, parsed, request.headers.get("if-match"))

    try:
        out = await run_in_threadpool(write)
    except BaseException:
        await run_in_threadpool(blobs.current().delete, info.key)
        raise
    if out.res_id != rid:  # If-None-Exist matched an existing Binary: the new content is not needed
        await run_in_threadpool(blobs.current().delete, info.key)
    return http.outcome_response(request, out)


# ------------------------------------------------------------------ reads


def _load(db, ctx: RequestContext, res_id: str, vid: str | None, raw: bool):
    """The stored Binary (Outcome, parsed resource, blob info), access checked."""
    with db.read() as conn:
        out = ix.vread(conn, ctx, "Binary", res_id, vid) if vid is not None else ix.read(conn, ctx, "Binary", res_id)
        resource = jsonio.parse_plain(out.body)
        if raw:
            _check_security_context(conn, ctx, resource)
    info = content_info(resource)
    if info is None and blob_key(resource):
        err = FhirError.of(503, "transient", f"The content of Binary/{res_id} is not available from the document store right now")
        err.headers["Retry-After"] = "30"
        raise err
    return out, resource, info


def _visible(conn, ctx: RequestContext, res_type: str, res_id: str) -> bool:
    """Whether the caller's criteria (scopes, acting-for rules) reach `res_type/res_id`."""
    from ..search.access import visible
    from ..security.authz import visibility

    return ctx.principal.unrestricted or visible(conn, res_type, res_id, visibility(ctx.principal, res_type, "r"))


def _check_security_context(conn, ctx: RequestContext, binary: dict) -> None:
    """R4 Binary.securityContext: access to the content follows access to that resource."""
    ref = (binary.get("securityContext") or {}).get("reference")
    if not isinstance(ref, str) or ref.count("/") != 1:
        return
    target_type, target_id = ref.split("/")
    authorize(ctx.principal, AccessRequest("read", target_type, target_id))
    if target_type == "DocumentReference":
        from ..storage import repository as repo

        stored = repo.read_current(conn, target_type, target_id)
        if stored is not None and stored.content:
            doc = orjson.loads(stored.content)
            cases = case_consent.cases_of(doc)
            if not _visible(conn, ctx, target_type, target_id):
                raise FhirError.of(404, "not-found", f"Binary/{binary.get('id')} is not known")
            if cases and not case_consent.may_see_case_documents(ctx.principal, cases, conn, doc):
                raise FhirError.of(403, "forbidden", "The documents of this case are shared only under the patient's consent for the case")


async def read(request: Request, ctx: RequestContext, db, res_id: str, vid: str | None = None) -> Response:
    raw = wants_raw(request)
    out, resource, info = await run_in_threadpool(_load, db, ctx, res_id, vid, raw)
    headers = {"ETag": out.etag, "Last-Modified": out.last_modified}
    inm = request.headers.get("if-none-match")
    if inm and inm.strip() in (out.etag, out.etag[2:], "*"):
        return Response(status_code=304, headers=headers)
    if raw:
        return _raw_response(request, resource, info, headers)
    return _json_response(request, resource, info, headers)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """One `bytes=` range as (first, last) inclusive; None to serve it all; "unsatisfiable"."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.split("=", 1)[1].strip()
    if "," in spec:
        return None  # several ranges: serving the whole representation is allowed (RFC 9110 14.2)
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    first, last = first.strip(), last.strip()
    if not first:
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    a = int(first)
    if a >= size:
        return "unsatisfiable"
    b = int(last) if last else size - 1
    if b < a:
        return None  # invalid range-spec: ignored
    return a, min(b, size - 1)


def _raw_response(request: Request, resource: dict, info, headers: dict) -> Response:
    ctype = resource.get("contentType") or "application/octet-stream"
    headers = {**headers, "X-Content-Type-Options": "nosniff"}
    sec = (resource.get("securityContext") or {}).get("reference")
    if sec:
        headers["X-Security-Context"] = sec
    if info is None:  # content inline in the resource (or none at all)
        data = decode_data(resource["data"]) if isinstance(resource.get("data"), str) else b""
        return Response(content=data, media_type=ctype, headers=headers)
    headers["Accept-Ranges"] = "bytes"
    rng = parse_range(request.headers.get("range"), info.size)
    if_range = request.headers.get("if-range")
    if rng is not None and if_range and if_range.strip() not in (headers["ETag"], headers["Last-Modified"]):
        rng = None  # the client's copy is stale: send it all
    store = blobs.current()
    if rng == "unsatisfiable":
        raise FhirError(416, [_issue(f"The range '{request.headers.get('range')}' is outside the content ({info.size} bytes)")],
                        headers={"Content-Range": f"bytes */{info.size}"})
    if rng is None:
        headers["Content-Length"] = str(info.size)
        return StreamingResponse(store.read(info.key), media_type=ctype, headers=headers)
    first, last = rng
    headers["Content-Range"] = f"bytes {first}-{last}/{info.size}"
    headers["Content-Length"] = str(last - first + 1)
    return StreamingResponse(store.read(info.key, first, last), status_code=206, media_type=ctype, headers=headers)


def _issue(text: str):
    from ..errors import Issue

    return Issue("error", "invalid", text)


def _json_response(request: Request, resource: dict, info, headers: dict) -> Response:
    media = http.response_media_type(request)
    if info is None:
        return Response(content=jsonio.dumps(resource), media_type=f"{media}; charset=utf-8", headers=headers)
    doc = without_content_extension(resource)
    doc.pop("data", None)
    head = jsonio.dumps(doc)[:-1] + b',"data":"'
    tail = b'"}'
    headers["Content-Length"] = str(len(head) + 4 * ((info.size + 2) // 3) + len(tail))
    return StreamingResponse(_json_chunks(head, tail, blobs.current().read(info.key)), media_type=f"{media}; charset=utf-8", headers=headers)


def _json_chunks(head: bytes, tail: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        if cut:
            yield base64.b64encode(data[:cut])
    if carry:
        yield base64.b64encode(carry)
    yield tail
