"""Batch and transaction Bundles (http://hl7.org/fhir/R4/http.html#transaction).

A transaction runs every entry on one database connection inside one database
transaction, in the spec's order (DELETE, POST, PUT/PATCH, GET/HEAD), after
resolving `urn:uuid:`/`urn:oid:` fullUrls and conditional references; any error
rolls all of it back and names the failing entry. A batch runs each entry in a
transaction of its own.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import Connection

import orjson

from ..errors import FhirError, Issue, operation_outcome
from ..model import jsonio
from . import bundle_refs, bundle_targets
from . import history as history_mod
from . import interactions as ix
from . import limits
from .context import Outcome, RequestContext
from .retry import run_with_retry

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}


@dataclass
class EntryRequest:
    index: int
    method: str
    res_type: str | None
    res_id: str | None
    version: str | None
    query: str
    full_url: str | None
    resource: Any  # preserving parse (JsonDecimal kept) or None
    request: dict = field(default_factory=dict)
    operation: str | None = None  # "$name" for operation entries


def _entry_error(index: int, exc: FhirError) -> FhirError:
    """Prefix every issue with the entry it came from."""
    issues = []
    for i in exc.issues:
        expr = [f"Bundle.entry[{index}].resource." + e.split(".", 1)[-1] if "." in e else f"Bundle.entry[{index}].resource.{e}" for e in (i.expression or [])]
        issues.append(Issue(i.severity, i.code, f"Bundle.entry[{index}]: {i.diagnostics}", expr or [f"Bundle.entry[{index}]"]))
    return FhirError(exc.status, issues, exc.headers)


def _parse_entry(index: int, entry: Any, base_url: str) -> EntryRequest:
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict):
        raise FhirError.of(400, "structure", f"{where} is not an object", where)
    req = entry.get("request")
    if not isinstance(req, dict) or not req.get("method") or not req.get("url"):
        raise FhirError.of(400, "required", f"{where}.request with method and url is required", f"{where}.request")
    method = str(req["method"]).upper()
    if method not in ORDER:
        raise FhirError.of(400, "value", f"{where}.request.method '{method}' is not a FHIR interaction", f"{where}.request.method")
    url = str(req["url"])
    if url.startswith(base_url):
        url = url[len(base_url):]
    elif "://" in url:
        parts = urlsplit(url)
        url = parts.path + ("?" + parts.query if parts.query else "")
        url = url.split("/fhir", 1)[-1] if "/fhir" in url else url
    url = url.lstrip("/")
    path, _, query = url.partition("?")
    segments = [s for s in path.split("/") if s]
    res_type = segments[0] if segments and not segments[0].startswith("$") else None
    res_id = segments[1] if len(segments) > 1 and not segments[1].startswith(("$", "_")) else None
    version = segments[3] if len(segments) > 3 and segments[2] == "_history" else None
    op = next((s for s in segments if s.startswith("$")), None)
    return EntryRequest(index, method, res_type, res_id, version, query, entry.get("fullUrl"), entry.get("resource"), req, op)


# ----------------------------------------------------------------------------- references


def _resolve_conditional_reference(conn: Connection, ctx: RequestContext, ref: str) -> str:
    res_type, _, query = ref.partition("?")
    ix.check_type(res_type)
    matches = ix._find(conn, ctx, res_type, query)
    if not matches:
        raise FhirError.of(412, "not-found", f"Conditional reference '{ref}' matched no resource")
    if len(matches) > 1:
        raise FhirError.of(412, "multiple-matches", f"Conditional reference '{ref}' matched {len(matches)} resources; it must match exactly one")
    return f"{res_type}/{matches[0][1]}"


def _rewrite(conn: Connection, ctx: RequestContext, entry: "EntryRequest", mapping: dict[str, str]) -> None:
    """Rewrite fullUrls and conditional references in the entry's resource; 400 for a
    `urn:uuid:` reference that no entry of the Bundle carries."""
    dangling = bundle_refs.rewrite(entry.resource, mapping, lambda ref: _resolve_conditional_reference(conn, ctx, ref))
    if dangling:
        raise FhirError(400, [
            Issue("error", "not-found", f"Reference '{ref}' at {path} names no entry of the Bundle (no entry has "
                  "that fullUrl), so it cannot be resolved", [path])
            for path, ref in dangling
        ])


# ----------------------------------------------------------------------------- entries


def _patch_body(entry: EntryRequest) -> tuple[Any, str]:
    res = entry.resource
    if isinstance(res, dict) and res.get("resourceType") == "Binary":
        try:
            data = base64.b64decode(res.get("data", ""))
        except ValueError:
            raise FhirError.of(400, "invalid", "PATCH Binary data is not base64") from None
        return jsonio.parse_preserving(data), str(res.get("contentType", "application/json-patch+json"))
    if isinstance(res, dict) and res.get("resourceType") == "Parameters":
        return res, "application/fhir+json"
    raise FhirError.of(400, "invalid", "A PATCH entry carries a Binary (JSON Patch) or a Parameters (FHIRPath Patch) resource")


def _execute(conn: Connection, ctx: RequestContext, entry: EntryRequest, assigned_id: str | None) -> Outcome:
    m, t = entry.method, entry.res_type
    if entry.operation:
        raise FhirError.of(400, "not-supported", f"Operations ({entry.operation}) are not supported inside a Bundle")
    if t is None and m != "GET":
        raise FhirError.of(400, "invalid", f"Entry url '{entry.request.get('url')}' names no resource type")
    if m in ("POST", "PUT"):
        if not isinstance(entry.resource, dict):
            raise FhirError.of(400, "required", f"A {m} entry needs a resource")
        parsed = ix.ParsedResource.from_preserving(entry.resource)
        if parsed.plain.get("resourceType") != t:
            raise FhirError.of(400, "invalid", f"The entry's resource is a {parsed.plain.get('resourceType')}, but the url names {t}", "resourceType")
        if m == "POST":
            parsed.plain.pop("id", None)
            parsed.preserving.pop("id", None)
            return ix.create(conn, ctx, t, parsed, entry.request.get("ifNoneExist"), res_id=assigned_id)
        if entry.res_id:
            return ix.update(conn, ctx, t, entry.res_id, parsed, entry.request.get("ifMatch"))
        if entry.query:
            return ix.conditional_update(conn, ctx, t, entry.query, parsed, entry.request.get("ifMatch"))
        raise FhirError.of(400, "invalid", "A PUT entry url needs an id or search criteria")
    if m == "PATCH":
        body, ctype = _patch_body(entry)
        if entry.res_id:
            return ix.patch(conn, ctx, t, entry.res_id, body, ctype, entry.request.get("ifMatch"))
        return ix.conditional_patch(conn, ctx, t, entry.query, body, ctype, entry.request.get("ifMatch"))
    if m == "DELETE":
        if entry.res_id:
            try:
                return ix.delete(conn, ctx, t, entry.res_id, entry.request.get("ifMatch"))
            except FhirError as exc:
                if exc.status == 404:  # deleting what is not there is not a failure
                    return Outcome(status=204, res_type=t, res_id=entry.res_id)
                raise
        return ix.conditional_delete(conn, ctx, t, entry.query)
    # GET / HEAD
    params = [(k, v) for k, v in parse_qsl(entry.query, keep_blank_values=True)]
    if t and entry.res_id and entry.version:
        return ix.vread(conn, ctx, t, entry.res_id, entry.version)
    if t and entry.res_id and "_history" in entry.request.get("url", ""):
        return Outcome(status=200, body=history_mod.history(conn, ctx, t, entry.res_id, params))
    if t and entry.res_id:
        return ix.read(conn, ctx, t, entry.res_id)
    return Outcome(status=200, body=ix.search(conn, ctx, t, params))


def _carries_resource(out: Outcome, include_resource: bool, method: str = "") -> bool:
    """Whether the response entry for `out` holds its resource: a GET (read, vread, search,
    history) always carries what it read (http.html#transaction-response); writes carry
    theirs on `return=representation`."""
    return out.body is not None and (method == "GET" or include_resource or out.res_type is None or out.status == 200 and out.location is None)


def _response_entry(out: Outcome, ctx: RequestContext, include_resource: bool, method: str = "") -> dict:
    """One response entry of a batch/transaction response."""
    response: dict = {"status": STATUS_TEXT.get(out.status, str(out.status))}
    if out.location and out.status in (200, 201):
        response["location"] = out.location
    if out.etag:
        response["etag"] = out.etag
    if out.last_updated:
        response["lastModified"] = out.last_updated
    if out.warnings:
        response["outcome"] = operation_outcome(out.warnings)
    entry: dict = {}
    if out.res_type and out.res_id:
        entry["fullUrl"] = f"{ctx.base_url}/{out.res_type}/{out.res_id}"
    if _carries_resource(out, include_resource, method):
        entry["resource"] = orjson.Fragment(out.body)
    if method == "HEAD":
        entry.pop("resource", None)
    entry["response"] = response
    return entry


def process_transaction(conn: Connection, ctx: RequestContext, bundle: dict, settings) -> dict:
    """Run a transaction Bundle on `conn` (the caller owns the database transaction).

    Order (http.html#trules): identities are resolved and checked first (two entries
    acting on one resource: 400), locks are taken in canonical order, then DELETE,
    POST, PUT/PATCH, and GET/HEAD last, so a GET sees the transaction's writes."""
    entries = [_parse_entry(i, e, ctx.base_url) for i, e in enumerate(bundle.get("entry") or [])]
    full_urls = [e.full_url for e in entries if e.full_url]
    if len(full_urls) != len(set(full_urls)):
        dup = next(u for u in full_urls if full_urls.count(u) > 1)
        where = [f"Bundle.entry[{e.index}]" for e in entries if e.full_url == dup]
        raise FhirError.of(400, "invalid", f"{' and '.join(where)} share the fullUrl '{dup}'", where)
    for e in entries:
        if e.operation:
            raise _entry_error(e.index, FhirError.of(400, "not-supported", f"Operations ({e.operation}) are not supported inside a Bundle"))
    bundle_targets.lock_criteria(conn, entries)
    plan = bundle_targets.plan_targets(conn, entries, ctx)
    bundle_targets.lock_targets(conn, plan)
    ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
    outcomes: dict[int, Outcome] = {}
    for e in (x for x in ordered if x.method == "DELETE"):
        try:
            outcomes[e.index] = _execute(conn, ctx, e, None)
        except FhirError as exc:
            raise _entry_error(e.index, exc) from None
    for e in entries:
        if e.resource is not None:
            try:
                _rewrite(conn, ctx, e, plan.mapping)
            except FhirError as exc:
                raise _entry_error(e.index, exc) from None
        if e.query and e.method in ("GET", "PUT", "PATCH", "DELETE") and "urn:" in e.query:
            for k, v in plan.mapping.items():
                e.query = e.query.replace(k, v)
    for e in (x for x in ordered if x.method != "DELETE"):
        try:
            outcomes[e.index] = _execute(conn, ctx, e, plan.assigned.get(e.index))
        except FhirError as exc:
            raise _entry_error(e.index, exc) from None
    include = ctx.prefer_return == "representation"
    budget = limits.ResponseBudget()
    for e in entries:
        out = outcomes[e.index]
        if _carries_resource(out, include, e.method):
            budget.take(len(out.body), "The transaction response")  # 413: the transaction rolls back
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [_response_entry(outcomes[e.index], ctx, include, e.method) for e in entries],
    }


def process_batch(db, ctx: RequestContext, bundle: dict, settings) -> dict:
    """Each entry on its own (retried like a transaction on deadlock); a failing
    entry answers with its OperationOutcome, the others still run."""
    include = ctx.prefer_return == "representation"
    out_entries = []
    budget = limits.ResponseBudget()
    for i, raw in enumerate(bundle.get("entry") or []):
        try:
            e = _parse_entry(i, raw, ctx.base_url)

            def one(conn, e=e):
                if e.resource is not None:
                    _rewrite(conn, ctx, e, {})
                return _execute(conn, ctx, e, None)

            out = run_with_retry(db, one, copy_of=None)
            if _carries_resource(out, include, e.method) and not budget.fits(len(out.body)):
                if e.method in ("GET", "HEAD"):
                    raise limits.too_large(budget.limit, "This entry's response")
                out.body = None  # written; its representation is left out of an over-large response
            out_entries.append(_response_entry(out, ctx, include, e.method))
        except FhirError as exc:
            err = _entry_error(i, exc)
            out_entries.append({"response": {"status": str(exc.status), "outcome": operation_outcome(err.issues)}})
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out_entries}


def run_transaction(db, ctx: RequestContext, bundle: dict, settings) -> dict:
    """A transaction Bundle in one database transaction, retried on deadlock or
    serialization failure (each attempt on a fresh copy of the Bundle)."""
    return run_with_retry(db, lambda conn, b: process_transaction(conn, ctx, b, settings), copy_of=bundle)


def process_bundle(db, ctx: RequestContext, parsed: ix.ParsedResource, settings) -> Outcome:
    """POST [base]: run a transaction or batch Bundle."""
    bundle = parsed.preserving
    if bundle.get("resourceType") != "Bundle":
        raise FhirError.of(400, "invalid", "POST to the base takes a Bundle of type transaction or batch", "resourceType")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError.of(400, "invalid", f"Bundle.type must be transaction or batch, not '{kind}'", "Bundle.type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirError.of(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
    if len(entries) > settings.max_bundle_entries:
        raise FhirError.of(413, "too-costly", f"The Bundle has {len(entries)} entries; the limit is {settings.max_bundle_entries}", "Bundle.entry")
    if kind == "transaction":
        result = run_transaction(db, ctx, bundle, settings)
    else:
        result = process_batch(db, ctx, bundle, settings)
    return Outcome(status=200, body=jsonio.dumps(result))


__all__ = ["process_bundle", "process_transaction", "process_batch", "run_transaction"]
