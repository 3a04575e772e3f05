"""The FHIR RESTful interactions on one database connection.

Each function takes the Connection of an open transaction, so the same code
serves a single HTTP request and every entry of a transaction Bundle. Nothing
here knows about HTTP beyond status numbers and header values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection

from .. import events, ids
from ..audit.log import AUDIT_TYPE, refuse_change
from ..errors import FhirError, Issue, operation_outcome
from ..model import jsonio
from ..model.lexical import is_version_id
from ..security.authz import AccessRequest, authorize, visibility
from ..security.versions import compartments_for_versions, version_visible
from ..security.write_references import check_write_references
from ..storage import repository as repo
from . import limits, rules
from .context import Outcome, RequestContext

ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")  # use with .match: \Z, unlike $, refuses a trailing newline


@dataclass
class ParsedResource:
    """A resource body parsed twice: `plain` (floats) to validate and index,
    `preserving` (exact decimals) to store."""

    plain: dict
    preserving: dict
    validated_as: str | None = None  # set once validated, so it is not done twice
    warnings: list[Issue] = field(default_factory=list)  # from validation (extensible/preferred bindings)

    @classmethod
    def from_bytes(cls, body: bytes) -> "ParsedResource":
        if not body or not body.strip():
            raise FhirError.of(400, "structure", "The request body is empty; a FHIR resource in JSON is required")
        preserving = jsonio.parse_preserving(body)
        return cls.from_preserving(preserving)

    @classmethod
    def from_preserving(cls, preserving: Any) -> "ParsedResource":
        if not isinstance(preserving, dict):
            raise FhirError.of(400, "structure", "The body must be a JSON object (a FHIR resource)")
        return cls(jsonio.to_plain(preserving), preserving)


# --------------------------------------------------------------------------- helpers


def now_utc() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


def fhir_instant(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def http_date(dt: datetime) -> str:
    return format_datetime(dt.astimezone(timezone.utc), usegmt=True)


def parse_instant(value: str, name: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError.of(400, "invalid", f"Invalid {name} value '{value}': expected a FHIR instant such as 2024-05-01T10:00:00Z", name) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def parse_etag(value: str | None) -> int | None:
    """`W/"3"` or `"3"` or `3` -> 3."""
    if value is None:
        return None
    m = re.fullmatch(r'\s*(?:W/)?"?([0-9]{1,9})"?\s*', value)
    if not m:
        raise FhirError.of(400, "invalid", f"Invalid ETag '{value}': expected W/\"<versionId>\"")
    return int(m.group(1))


def check_type(res_type: str) -> None:
    from ..model.definitions import resource_types

    if res_type not in resource_types():
        raise FhirError.of(404, "not-supported", f"Resource type '{res_type}' is not supported by this server")


def check_id(res_id: str) -> None:
    if not ID_RE.match(res_id):
        raise FhirError.of(400, "invalid", f"Invalid resource id '{res_id}': 1-64 of A-Z a-z 0-9 - .")


def _validate(res_type: str, parsed: ParsedResource) -> None:
    from ..model.validation import validate_resource

    if parsed.validated_as == res_type:
        return
    warnings: list[Issue] = []
    errors = validate_resource(parsed.plain, res_type, warnings)
    if errors:
        # A resource that parses but holds a code outside a required binding is
        # unprocessable (422, http.html#2.21.0.11); anything structural is a 400.
        raise FhirError(422 if all(i.code == "code-invalid" for i in errors) else 400, errors)
    parsed.warnings = warnings
    parsed.validated_as = res_type


def prevalidate(res_type: str, parsed: ParsedResource) -> None:
    """Validate before the write transaction opens, so that the CPU work is not
    done while holding the database's write lock (SQLite has one writer)."""
    check_type(res_type)
    _validate(res_type, parsed)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    query = query.lstrip("?")
    return [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)]


def _find(conn: Connection, ctx: RequestContext, res_type: str, query: str, limit: int = 2) -> list[tuple[int, str]]:
    """Matches of a conditional interaction's criteria among what the caller may see."""
    from ..search.engine import SearchRequest, find_matches

    pairs = _query_pairs(query)
    if not pairs:
        raise FhirError.of(400, "invalid", "A conditional interaction needs search criteria")
    authorize(ctx.principal, AccessRequest("search-type", res_type))
    if res_type == AUDIT_TYPE:
        from ..audit.log_search import find

        return find(conn, SearchRequest(res_type, pairs, ctx.base_url, access=ctx.access()), limit)
    return find_matches(conn, res_type, pairs, limit=limit, base_url=ctx.base_url, access=ctx.access())


def _within(conn: Connection, ctx: RequestContext, res_type: str, res_id: str, permission: str) -> bool:
    """Whether the live resource lies within what the caller's scopes reach for `permission`.

    A Binary outside the caller's criteria (it is in no compartment) is within reach when
    its `securityContext` is a resource the caller may read: R4 Binary.securityContext is
    "a proxy of the security sensitivity" of the content. So a patient uploads a bill with
    `X-Security-Context: Patient/<self>` (or their DocumentReference) and reads it back;
    nobody else's token reaches it."""
    if ctx.principal.unrestricted:
        return True
    if res_type == AUDIT_TYPE:  # the access log's rows (audit.log_links), not the resources table
        from ..audit.log_links import event_visible

        return event_visible(conn, ctx, res_id)
    from ..search.access import visible

    vis = visibility(ctx.principal, res_type, permission)
    if visible(conn, res_type, res_id, vis):
        return res_type != "Binary" or not _case_document_hidden(conn, ctx, res_id)
    return res_type == "Binary" and vis != [] and _security_context_within(conn, ctx, res_id)


def _case_document_hidden(conn: Connection, ctx: RequestContext, res_id: str) -> bool:
    """Whether Binary/`res_id` is the content of a DocumentReference (its securityContext)
    that the per-case consent hides from this caller (staff without the case consent:
    security.case_consent); the content is then as invisible as the document."""
    from ..search.access import visible
    from ..security.case_consent import staff_criteria

    if staff_criteria(ctx.principal, "DocumentReference") is None:
        return False
    ref = _security_context(conn, res_id)
    if ref is None or not ref.startswith("DocumentReference/"):
        return False
    doc_id = ref.split("/", 1)[1]
    stored = repo.read_current(conn, "DocumentReference", doc_id)
    if stored is None or stored.deleted:
        return False
    return not visible(conn, "DocumentReference", doc_id, visibility(ctx.principal, "DocumentReference", "r"))


def _security_context(conn: Connection, res_id: str) -> str | None:
    stored = repo.read_current(conn, "Binary", res_id)
    if stored is None or stored.deleted or not stored.content:
        return None
    ref = ((orjson.loads(stored.content).get("securityContext") or {}).get("reference"))
    return ref if isinstance(ref, str) and ref.count("/") == 1 else None


def _security_context_within(conn: Connection, ctx: RequestContext, res_id: str) -> bool:
    ref = _security_context(conn, res_id)
    if ref is None:
        return False
    from ..model.definitions import resource_types

    target_type, target_id = ref.split("/")
    if target_type == "Binary" or target_type not in resource_types():
        return False
    return _within(conn, ctx, target_type, target_id, "r")


def _check_written(conn: Connection, ctx: RequestContext, out: Outcome, permission: str) -> None:
    """After a write (same transaction): the new version must lie within the scopes'
    reach (a patient/ token writes only into its own compartment); else 403 and the
    transaction rolls back."""
    if out.res_type and out.res_id and not _within(conn, ctx, out.res_type, out.res_id, permission):
        raise FhirError.of(403, "forbidden", f"{out.res_type}/{out.res_id} would lie outside what the token may write (its compartment or scope criteria)")


def _check_existing(conn: Connection, ctx: RequestContext, res_type: str, res_id: str, permission: str) -> None:
    """Before changing an existing resource: it must be within the scopes' reach.

    One the caller may not even read is answered exactly as an unknown id (404, the
    same text), so writes cannot tell which ids exist in other records; one it may read
    but not change is 403."""
    if _within(conn, ctx, res_type, res_id, permission):
        return
    if permission != "r" and not _within(conn, ctx, res_type, res_id, "r"):
        raise FhirError.of(404, "not-found", f"{res_type}/{res_id} is not known")
    raise FhirError.of(403, "forbidden", f"{res_type}/{res_id} is outside what the token may {'delete' if permission == 'd' else 'update'}")


def _criteria_key(query: str) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(_query_pairs(query)))


def _outcome_for(stored: repo.StoredResource, status: int) -> Outcome:
    return Outcome(
        status=status,
        body=stored.content,
        res_type=stored.res_type,
        res_id=stored.res_id,
        version_id=stored.version_id,
        last_modified=http_date(stored.last_updated),
        last_updated=fhir_instant(stored.last_updated),
    )


def _finish_write(ctx: RequestContext, out: Outcome, message: str) -> Outcome:
    """Apply `Prefer: return=...` to a successful write."""
    out.headers["ETag"] = out.etag or ""
    out.headers["Last-Modified"] = out.last_modified or ""
    if out.status == 201 and out.location:
        out.headers["Location"] = f"{ctx.base_url}/{out.location}"
    if ctx.prefer_return == "minimal":
        out.body = None
    elif ctx.prefer_return == "OperationOutcome":
        issues = [Issue("information", "informational", message)] + out.warnings
        out.body = jsonio.dumps(operation_outcome(issues))
    return out


# --------------------------------------------------------------------------- writes


def _store(
    conn: Connection,
    ctx: RequestContext,
    res_type: str,
    res_id: str,
    parsed: ParsedResource,
    current: repo.StoredResource | None,
    method: str,
    warnings: list[Issue],
) -> Outcome:
    """Write a new version of (res_type, res_id): versions, indexes, events."""
    from ..search import custom, local_base
    from ..search.indexer import delete_index, index_resource

    custom.maybe_refresh(conn)  # index custom parameters another process activated
    version_id = (current.version_id + 1) if current else 1
    now = now_utc()
    meta_extra = {"versionId": str(version_id), "lastUpdated": fhir_instant(now)}
    for doc in (parsed.preserving, parsed.plain):
        doc["id"] = res_id
        meta = dict(doc.get("meta") or {})
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        doc["meta"] = {**meta_extra, **meta}
        # resourceType first, then id and meta, for readers' sake
        reordered = {"resourceType": doc.pop("resourceType", res_type), "id": doc.pop("id"), "meta": doc.pop("meta")}
        reordered.update(doc)
        doc.clear()
        doc.update(reordered)
    content = jsonio.dumps(parsed.preserving)
    limits.check_resource_size(content, res_type)
    http_method = {"create": "POST", "update": "PUT", "patch": "PATCH"}[method]
    if current is None:
        pk = repo.insert_resource(conn, res_type, res_id, version_id, now, content, http_method)
    else:
        pk = current.pk
        repo.write_version(conn, pk, res_type, res_id, version_id, now, content, http_method)
        delete_index(conn, pk)
    with local_base.serving(ctx.base_url):
        index_resource(conn, pk, res_type, parsed.plain)
    if events.has_subscribers(res_type):  # parsing the old version costs; only listeners need it
        old = orjson.loads(current.content) if current is not None and current.content else None
        events.emit(conn, events.ResourceChange(res_type, res_id, version_id, method, old, parsed.plain))
    status = 201 if current is None or current.deleted else 200
    return Outcome(
        status=status,
        body=content,
        res_type=res_type,
        res_id=res_id,
        version_id=version_id,
        last_modified=http_date(now),
        last_updated=fhir_instant(now),
        warnings=warnings,
    )


def _prepare_write(conn: Connection, ctx: RequestContext, interaction: str, res_type: str, res_id: str | None, parsed: ParsedResource) -> list[Issue]:
    check_type(res_type)
    _validate(res_type, parsed)
    authorize(ctx.principal, AccessRequest(interaction, res_type, res_id, parsed.plain))
    check_write_references(conn, ctx.principal, res_type, parsed.plain)
    rules.prepare(conn, ctx, res_type, res_id, parsed)
    return parsed.warnings + rules.run(conn, res_type, res_id, parsed.plain)


def create(
    conn: Connection,
    ctx: RequestContext,
    res_type: str,
    parsed: ParsedResource,
    if_none_exist: str | None = None,
    res_id: str | None = None,
) -> Outcome:
    """POST /Type (server-assigned id), with optional If-None-Exist."""
    check_type(res_type)
    if if_none_exist:
        repo.lock_key(conn, "conditional-create", res_type, _criteria_key(if_none_exist))
        matches = _find(conn, ctx, res_type, if_none_exist)
        if len(matches) > 1:
            raise FhirError.of(412, "multiple-matches", f"If-None-Exist '{if_none_exist}' matched {len(matches)} resources; the criteria must select at most one")
        if matches:
            if res_type == AUDIT_TYPE:
                from ..audit.log_rest import read as read_audit_event

                return _finish_write(ctx, read_audit_event(conn, ctx, matches[0][1]), f"A matching AuditEvent exists already (AuditEvent/{matches[0][1]}); nothing created")
            stored = repo.read_current(conn, res_type, matches[0][1])
            authorize(ctx.principal, AccessRequest("read", res_type, stored.res_id))
            out = _outcome_for(stored, 200)
            return _finish_write(ctx, out, f"A matching {res_type} exists already ({res_type}/{stored.res_id}); nothing created")
    new_id = res_id or ids.new_id()
    warnings = _prepare_write(conn, ctx, "create", res_type, new_id, parsed)
    if res_type == AUDIT_TYPE:  # the access log's own store
        from ..audit.log_rest import create as create_audit_event

        return _finish_write(ctx, create_audit_event(conn, ctx, new_id, parsed.preserving), f"Created AuditEvent/{new_id}")
    out = _store(conn, ctx, res_type, new_id, parsed, None, "create", warnings)
    _check_written(conn, ctx, out, "c")
    return _finish_write(ctx, out, f"Created {res_type}/{new_id}")


def update(
    conn: Connection,
    ctx: RequestContext,
    res_type: str,
    res_id: str,
    parsed: ParsedResource,
    if_match: str | None = None,
) -> Outcome:
    """PUT /Type/id: a new version, or update-as-create with the client's id."""
    check_type(res_type)
    refuse_change(res_type, "update")
    check_id(res_id)
    body_id = parsed.plain.get("id")
    if body_id is None:
        raise FhirError.of(400, "required", "The resource in an update must carry its id", f"{res_type}.id")
    if body_id != res_id:
        raise FhirError.of(400, "invalid", f"The resource id '{body_id}' does not match the URL id '{res_id}'", f"{res_type}.id")
    current = repo.read_current(conn, res_type, res_id, for_update=True)
    expected = parse_etag(if_match)
    if expected is not None:
        have = current.version_id if current and not current.deleted else None
        if have != expected:
            raise FhirError.of(412, "conflict", f"Version conflict: If-Match asks for version {expected}, the current version is {have or 'none'}")
    warnings = _prepare_write(conn, ctx, "update", res_type, res_id, parsed)
    if current is not None and not current.deleted:
        _check_existing(conn, ctx, res_type, res_id, "u")
    out = _store(conn, ctx, res_type, res_id, parsed, current, "update", warnings)
    _check_written(conn, ctx, out, "u" if out.status == 200 else "c")
    return _finish_write(ctx, out, f"Updated {res_type}/{res_id}" if out.status == 200 else f"Created {res_type}/{res_id}")


def conditional_update(
    conn: Connection, ctx: RequestContext, res_type: str, query: str, parsed: ParsedResource, if_match: str | None = None
) -> Outcome:
    """PUT /Type?criteria: 0 matches create, 1 updates, more is 412."""
    check_type(res_type)
    refuse_change(res_type, "update")
    repo.lock_key(conn, "conditional-create", res_type, _criteria_key(query))
    matches = _find(conn, ctx, res_type, query)
    if len(matches) > 1:
        raise FhirError.of(412, "multiple-matches", f"Conditional update '{query}' matched {len(matches)} resources")
    body_id = parsed.plain.get("id")
    if matches:
        res_id = matches[0][1]
        if body_id is not None and body_id != res_id:
            raise FhirError.of(400, "invalid", f"The resource id '{body_id}' does not match the matched resource {res_type}/{res_id}", f"{res_type}.id")
        parsed.plain["id"] = parsed.preserving["id"] = res_id
        return update(conn, ctx, res_type, res_id, parsed, if_match)
    if body_id is not None:
        check_id(body_id)
        if repo.read_current(conn, res_type, body_id) is not None:
            return update(conn, ctx, res_type, body_id, parsed, if_match)
    return create(conn, ctx, res_type, parsed, res_id=body_id)


def patch(
    conn: Connection,
    ctx: RequestContext,
    res_type: str,
    res_id: str,
    body: Any,
    content_type: str,
    if_match: str | None = None,
) -> Outcome:
    """PATCH /Type/id with JSON Patch, FHIRPath Patch or JSON merge patch."""
    from .patch import apply_patch

    check_type(res_type)
    refuse_change(res_type, "patch")
    current = repo.read_current(conn, res_type, res_id, for_update=True)
    if current is None:
        raise FhirError.of(404, "not-found", f"{res_type}/{res_id} is not known")
    if current.deleted:
        raise FhirError.of(410, "deleted", f"{res_type}/{res_id} has been deleted")
    _check_existing(conn, ctx, res_type, res_id, "u")
    expected = parse_etag(if_match)
    if expected is not None and expected != current.version_id:
        raise FhirError.of(412, "conflict", f"Version conflict: If-Match asks for version {expected}, the current version is {current.version_id}")
    patched = apply_patch(jsonio.parse_preserving(current.content), body, content_type)
    if not isinstance(patched, dict):
        raise FhirError.of(422, "processing", "The patch does not produce a resource")
    if patched.get("resourceType") != res_type or patched.get("id") != res_id:
        raise FhirError.of(422, "processing", "A patch may not change the resource's type or id")
    parsed = ParsedResource.from_preserving(patched)
    try:
        warnings = _prepare_write(conn, ctx, "patch", res_type, res_id, parsed)
    except FhirError as exc:
        if exc.status == 400:  # the patched result is invalid: the patch is unprocessable
            exc.status = 422
        raise
    out = _store(conn, ctx, res_type, res_id, parsed, current, "patch", warnings)
    _check_written(conn, ctx, out, "u")
    return _finish_write(ctx, out, f"Patched {res_type}/{res_id}")


def conditional_patch(conn: Connection, ctx: RequestContext, res_type: str, query: str, body: Any, content_type: str, if_match: str | None = None) -> Outcome:
    check_type(res_type)
    refuse_change(res_type, "patch")
    matches = _find(conn, ctx, res_type, query)
    if not matches:
        raise FhirError.of(404, "not-found", f"Conditional patch '{query}' matched no {res_type}")
    if len(matches) > 1:
        raise FhirError.of(412, "multiple-matches", f"Conditional patch '{query}' matched {len(matches)} resources")
    return patch(conn, ctx, res_type, matches[0][1], body, content_type, if_match)


def delete(conn: Connection, ctx: RequestContext, res_type: str, res_id: str, if_match: str | None = None) -> Outcome:
    """DELETE /Type/id: a tombstone version; reads then answer 410."""
    from ..search.indexer import delete_index

    check_type(res_type)
    refuse_change(res_type, "delete")
    authorize(ctx.principal, AccessRequest("delete", res_type, res_id))
    current = repo.read_current(conn, res_type, res_id, for_update=True)
    if current is None:
        raise FhirError.of(404, "not-found", f"{res_type}/{res_id} is not known")
    if not current.deleted:
        _check_existing(conn, ctx, res_type, res_id, "d")
    expected = parse_etag(if_match)
    if expected is not None and expected != current.version_id:
        raise FhirError.of(412, "conflict", f"Version conflict: If-Match asks for version {expected}, the current version is {current.version_id}")
    if current.deleted:
        return Outcome(status=204, res_type=res_type, res_id=res_id, version_id=current.version_id, headers={"ETag": f'W/"{current.version_id}"'})
    version_id = current.version_id + 1
    now = now_utc()
    repo.write_version(conn, current.pk, res_type, res_id, version_id, now, None, "DELETE")
    delete_index(conn, current.pk)
    if events.has_subscribers(res_type):
        events.emit(conn, events.ResourceChange(res_type, res_id, version_id, "delete", orjson.loads(current.content), None))
    out = Outcome(status=200, res_type=res_type, res_id=res_id, version_id=version_id, last_modified=http_date(now))
    out.headers["ETag"] = out.etag
    out.body = jsonio.dumps(operation_outcome([Issue("information", "informational", f"Deleted {res_type}/{res_id}")]))
    return out


def conditional_delete(conn: Connection, ctx: RequestContext, res_type: str, query: str) -> Outcome:
    check_type(res_type)
    refuse_change(res_type, "delete")
    matches = _find(conn, ctx, res_type, query)
    if len(matches) > 1:
        raise FhirError.of(412, "multiple-matches", f"Conditional delete '{query}' matched {len(matches)} resources; only single deletes are supported")
    if not matches:
        return Outcome(status=204)
    return delete(conn, ctx, res_type, matches[0][1])


# --------------------------------------------------------------------------- reads


def search(conn: Connection, ctx: RequestContext, res_type: str | None, params: list[tuple[str, str]], compartment: tuple[str, str] | None = None) -> bytes:
    """Type, system or compartment search: the searchset Bundle as JSON bytes."""
    from ..audit.log_search import is_log_search, search as search_log
    from ..search.engine import execute_search

    req = search_request(ctx, res_type, params, compartment)
    if is_log_search(res_type, params):
        return search_log(conn, req)
    return execute_search(conn, req)


def search_request(ctx: RequestContext, res_type: str | None, params: list[tuple[str, str]], compartment: tuple[str, str] | None = None):
    """The authorised search.engine.SearchRequest of a search (404 unknown type, 401/403 at the seam)."""
    from ..search.engine import SearchRequest

    if res_type:
        check_type(res_type)
    interaction = "search-type" if res_type else "search-system"
    authorize(ctx.principal, AccessRequest(interaction, res_type, compartment[1] if compartment else None))
    return SearchRequest(res_type, params, ctx.base_url, ctx.lenient, compartment, ctx.access())


def read(conn: Connection, ctx: RequestContext, res_type: str, res_id: str) -> Outcome:
    if res_type == AUDIT_TYPE:
        from ..audit.log_rest import read as read_audit_event

        return read_audit_event(conn, ctx, res_id)
    check_read(ctx, res_type, res_id)
    stored = repo.read_current(conn, res_type, res_id)
    if stored is not None and not stored.deleted:
        check_visible(conn, ctx, res_type, res_id)
    return read_outcome(res_type, res_id, stored)


def needs_visibility_check(ctx: RequestContext, res_type: str) -> bool:
    """Whether a read of `res_type` must ask the database if the resource is within the
    caller's reach (a compartment or scope criteria), i.e. cannot use a bare lookup. An
    AuditEvent is always read through `read` (the access log's own store)."""
    return res_type == AUDIT_TYPE or not ctx.principal.unrestricted and visibility(ctx.principal, res_type, "r") is not None


def check_visible(conn: Connection, ctx: RequestContext, res_type: str, res_id: str) -> None:
    """A resource outside the caller's reach answers 404, exactly as one that does not
    exist: a token cannot probe which ids exist in other patients' records."""
    if not _within(conn, ctx, res_type, res_id, "r"):
        raise FhirError.of(404, "not-found", f"{res_type}/{res_id} is not known")


def check_read(ctx: RequestContext, res_type: str, res_id: str) -> None:
    """What a read checks before it touches the database."""
    check_type(res_type)
    authorize(ctx.principal, AccessRequest("read", res_type, res_id))


def read_outcome(res_type: str, res_id: str, stored: repo.StoredResource | None) -> Outcome:
    """The answer to a read, given the stored row (or None)."""
    if stored is None:
        raise FhirError.of(404, "not-found", f"{res_type}/{res_id} is not known")
    if stored.deleted:
        raise FhirError(
            410,
            [Issue("error", "deleted", f"{res_type}/{res_id} has been deleted")],
            headers={"ETag": f'W/"{stored.version_id}"', "Last-Modified": http_date(stored.last_updated)},
        )
    return _outcome_for(stored, 200)


def vread(conn: Connection, ctx: RequestContext, res_type: str, res_id: str, version: str) -> Outcome:
    if res_type == AUDIT_TYPE:
        from ..audit.log_rest import vread as vread_audit_event

        return vread_audit_event(conn, ctx, res_id, version)
    check_type(res_type)
    authorize(ctx.principal, AccessRequest("vread", res_type, res_id))
    if not is_version_id(version):
        raise FhirError.of(404, "not-found", f"Version '{version}' of {res_type}/{res_id} is not known")
    check_visible(conn, ctx, res_type, res_id)
    stored = repo.read_version(conn, res_type, res_id, int(version))
    if stored is None:
        raise FhirError.of(404, "not-found", f"Version {version} of {res_type}/{res_id} is not known")
    if not version_visible(res_type, stored.content, compartments_for_versions(ctx.principal, res_type), ctx.base_url):
        raise FhirError.of(404, "not-found", f"Version {version} of {res_type}/{res_id} is not known")  # another compartment's
    if stored.deleted:
        raise FhirError(410, [Issue("error", "deleted", f"Version {version} of {res_type}/{res_id} is a deletion")])
    return _outcome_for(stored, 200)
