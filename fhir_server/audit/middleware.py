"""ASGI layer that writes one AuditEvent per audited request (the access log's edge).

Placed outside the bearer-token check, so refused requests (401 without a valid token,
403 from the seam, 405 on AuditEvent changes, 429) are logged like any other, and
outside the fast read path, so reads answered there are logged too. It opens an
`AuditRecord` for the layers inside (`audit.context`), and when the response has
started it queues the event (`audit.writer`): the request does no audit I/O itself.

Read from the request: method and path (`audit.classify`), the query string of a search
(BALP's Query entity), `X-Acting-For`, the client address; from the response: the status
and, for errors, the OperationOutcome's diagnostics; at the token endpoint the client id
and, on success, the issued token's subject and patient context (never the token itself).
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timezone
from urllib.parse import parse_qsl

import orjson

from ..errors import Issue, operation_outcome
from .balp import FACT_FIELDS, AuditFacts, facts_row
from .classify import LOGIN_PATHS, classify
from .context import AuditRecord, close_record, open_record

_CAPTURE_LIMIT = 16 * 1024
_ROW = ("kind", "subtype", "action", "status", "recorded", "detail", "subject", "client_id", "fhir_user", "token_id",
        "context_patient", "acting_for", "client_address", "server_base", "request_id", "data", "query", "patients")
if FACT_FIELDS != _ROW:  # _log builds rows in this order
    raise ImportError("audit.middleware._log's row order no longer matches balp.AuditFacts")
_REFUSED_CHANGES = ("PUT", "PATCH", "DELETE")


class AuditMiddleware:
    def __init__(self, app, writer, base_path: str, server_base: str = ""):
        self.app = app
        self.writer = writer
        self.base = base_path.rstrip("/")
        self.server_base = server_base.rstrip("/")
        self.audit_prefix = self.base + "/AuditEvent"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"]
        path = scope["path"]
        inter = classify(method, path, self.base)
        if inter is None:
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        acting_for = host = None
        for k, v in scope["headers"]:  # one pass for both (the first of each, as Starlette's headers.get())
            if k == b"x-acting-for" and acting_for is None:
                acting_for = v.decode("latin-1").strip()[:256]
            elif k == b"host" and host is None:
                host = v
        client = scope.get("client")
        record = AuditRecord(state, client[0] if client else "", acting_for,
                             self.server_base or _base_of(scope.get("scheme", "http"), host, self.base))
        status = 0
        captured = bytearray()
        login = path in LOGIN_PATHS
        request_body = bytearray()

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and (status >= 400 or login) and len(captured) < _CAPTURE_LIMIT:
                captured.extend(message.get("body", b"")[:_CAPTURE_LIMIT])
            await send(message)

        async def receive_and_note():
            message = await receive()
            if message["type"] == "http.request" and len(request_body) < _CAPTURE_LIMIT:
                request_body.extend(message.get("body", b"")[:_CAPTURE_LIMIT])
            return message

        token = open_record(record)
        try:
            if method in _REFUSED_CHANGES and (path == self.audit_prefix or path.startswith(self.audit_prefix + "/")):
                status = 405
                body = orjson.dumps(operation_outcome([Issue("error", "not-supported", "AuditEvents cannot be changed or deleted: the access log is append-only")]))
                captured.extend(body)
                await send({"type": "http.response.start", "status": 405,
                            "headers": [(b"content-type", b"application/fhir+json; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await self.app(scope, receive_and_note if login else receive, send_and_note)
        finally:
            close_record(token)
            try:
                self._log(scope, inter, record, status or 500, bytes(captured), bytes(request_body))
            except Exception:  # the access log never turns an answered request into an error
                logging.getLogger("fhir_server.audit").exception("could not queue the AuditEvent of %s %s", method, path)

    def _log(self, scope, inter, record: AuditRecord, status: int, response: bytes, request: bytes) -> None:
        """Queue the request's event as a facts row (balp.FACT_FIELDS order): the writer
        builds the rest; here it costs a tuple and one orjson call."""
        if inter.writes and record.writes_audited and status < 400:
            return  # each change has its event already, committed with it
        principal = record.principal
        if principal is not None and principal.authenticated:
            subject, client_id, fhir_user = principal.subject, principal.client_id, principal.fhir_user
            token_id, context_patient = (principal.claims or {}).get("jti"), principal.patient
        else:
            subject = client_id = fhir_user = token_id = context_patient = None
        query = scope.get("query_string", b"").decode("latin-1") if inter.is_search else None
        detail = _diagnostics(response) if status >= 400 else inter.subtype if inter.subtype.startswith("$") else ""
        lookup = [(t, i.split("/", 1)[0]) for t, i in inter.data]
        if record.returned:
            lookup.extend(record.returned)
        patients: list[str] = []
        if record.known:  # patients the request found already (a compartment check): no lookup for them
            unknown = []
            for pair in lookup:
                found = record.known.get(pair)
                if found is None:
                    unknown.append(pair)
                else:
                    patients.extend(p for p in found if p not in patients)
            lookup = unknown
        if record.patients:  # events read from the log: the patients they are about
            patients = list(dict.fromkeys(record.patients))
        row = (inter.kind, inter.subtype, inter.action, status, datetime.now(timezone.utc), detail, subject, client_id,
               fhir_user, token_id, context_patient, record.acting_for, record.client_address, record.server_base,
               record.request_id, inter.data, query, patients)
        if inter.kind == "login":
            facts = AuditFacts(*row)
            _login_facts(facts, request, response, status, scope)
            row = facts_row(facts)
        self.writer.submit_row(row, lookup)


_bases: dict[tuple, str] = {}  # (scheme, Host, base path) -> the base URL: a server sees few


def _base_of(scheme: str, host: bytes | None, base: str) -> str:
    """The base URL the request named (no public base URL configured)."""
    key = (scheme, host, base)
    url = _bases.get(key)
    if url is None:
        url = f"{scheme}://{host.decode('latin-1')}{base}" if host else base
        if len(_bases) >= 1024:  # Host is the client's to choose: keep the memo bounded
            _bases.clear()
        _bases[key] = url
    return url


def _diagnostics(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(doc, dict):
        return ""
    if doc.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics", "")) for i in doc.get("issue") or [] if isinstance(i, dict))[:500]
    return str(doc.get("error_description") or doc.get("error") or "")[:500]  # OAuth errors (RFC 6749 §5.2)


def _login_facts(facts: AuditFacts, request: bytes, response: bytes, status: int, scope) -> None:
    """Who logged in at the token endpoint: the client from the form or Basic auth; on
    success the subject, fhirUser and patient context of the token issued (read from our
    own token's claims; nothing secret is kept)."""
    form = dict(parse_qsl(request.decode("latin-1"))) if request else {}
    facts.detail = f"grant_type={form.get('grant_type', '')}" + (f"; {facts.detail}" if facts.detail else "")
    client_id = form.get("client_id")
    if not client_id:
        auth = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
        if auth.lower().startswith("basic "):
            try:
                client_id = base64.b64decode(auth[6:].strip()).decode("utf-8").split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                client_id = None
    if not client_id and form.get("client_assertion"):  # private_key_jwt: the client names itself in iss
        client_id = _unverified_claims(form["client_assertion"]).get("iss")
    facts.client_id = client_id or facts.client_id
    if status >= 400 or not response:
        return
    try:
        doc = orjson.loads(response)
        claims = _unverified_claims(doc.get("access_token", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return
    facts.subject = claims.get("sub") or facts.subject
    facts.client_id = claims.get("client_id") or facts.client_id
    facts.fhir_user = claims.get("fhirUser") or facts.fhir_user
    facts.token_id = claims.get("jti")
    patient = doc.get("patient") or claims.get("patient")
    facts.context_patient = patient
    if patient:
        facts.patients = [patient]


def _unverified_claims(token: str) -> dict:
    """The payload of a JWT this server has just issued (read for the log, not trusted for access)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = orjson.loads(payload)
    except (ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}
