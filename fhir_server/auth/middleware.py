"""ASGI layer that turns `Authorization: Bearer <JWT>` into the request's Principal.

Secure by default: every path needs a valid token except the open ones (the
CapabilityStatement, SMART/OpenID discovery, the OAuth endpoints under /auth, /health,
/ready and the API docs). A missing, malformed, expired or badly signed token is a 401
OperationOutcome with `WWW-Authenticate: Bearer realm="<base>", error="invalid_token"`
(RFC 6750 §3). With `FHIR_SERVER_AUTH=off` every request runs as an unrestricted
principal (a warning is logged at start-up and shown in the CapabilityStatement).

The principal is put in the request scope's state (`state["principal"]`), where the
HTTP edge and the fast read path pick it up for the authorisation seam.
"""

from __future__ import annotations

import hashlib
import logging

import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..api.forwarding import DEFAULT_POLICY
from ..errors import FhirError, Issue, operation_outcome
from ..security.authz import Principal
from .verify import IdentityRefused, InvalidToken

log = logging.getLogger("fhir_server.auth")

AUTH_OFF = Principal.internal("auth-off")
OPEN_PREFIXES = ("/auth/", "/.well-known/", "/docs", "/redoc")
OPEN_EXACT = ("/health", "/ready", "/openapi.json")


def _header(scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


_BASE_HEADERS = frozenset((b"host", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix"))
_base_urls: dict[tuple, str] = {}  # what request_base_url answered, by everything it reads


def request_base_url(scope, base_path: str) -> str:
    """The FHIR base as the client sees it: the configured public base URL, or the
    request's, with X-Forwarded-* believed from trusted proxies only (api/forwarding.py).
    An untrusted peer cannot choose the audience a token is checked against.

    Memoised by all it depends on (the policy, scheme, server, peer address and the Host
    and X-Forwarded-* headers): each request with a token needs it before the token's
    cache lookup, and a portal sends the same few combinations all day."""
    app = scope.get("app")
    policy = getattr(getattr(app, "state", None), "forwarding", None) or DEFAULT_POLICY
    client = scope.get("client")
    server = scope.get("server")
    key = (policy.public_base_url, policy.trusted_proxies, base_path, scope.get("scheme"),
           server if type(server) is tuple else tuple(server or ()), client[0] if client else None,
           tuple([v for k, v in scope["headers"] if k in _BASE_HEADERS]))
    url = _base_urls.get(key)
    if url is None:
        url = policy.base_url(Request(scope), base_path)
        if len(_base_urls) >= 1024:
            _base_urls.clear()
        _base_urls[key] = url
    return url


class BearerAuth:
    def __init__(self, app, settings, verifier, base_path: str, rate_limiter=None):
        self.app = app
        self.settings = settings
        self.verifier = verifier
        self.base = base_path.rstrip("/")
        self.off = settings.auth.strip().lower() == "off"
        self.rate_limiter = rate_limiter
        self.open_exact = set(OPEN_EXACT) | {
            self.base + "/metadata",
            self.base + "/.well-known/smart-configuration",
            self.base + "/.well-known/openid-configuration",
        }

    def is_open(self, path: str) -> bool:
        return path in self.open_exact or path.startswith(OPEN_PREFIXES)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        if self.off:
            state["principal"] = AUTH_OFF
            return await self.app(scope, receive, send)
        path = scope["path"]
        if scope["method"] == "OPTIONS" or self.is_open(path):
            return await self.app(scope, receive, send)
        base_url = request_base_url(scope, self.base)
        realm = self.settings.auth_base_url or base_url
        header = _header(scope, b"authorization")
        if not header:
            return await _deny(send, realm, "This request needs a bearer token (Authorization: Bearer <access token>)")
        kind, _, token = header.strip().partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token or " " in token:
            return await _deny(send, realm, "The Authorization header must be 'Bearer <access token>'")
        try:
            hit = self.verifier._cached(_cache_key(token, self.settings.auth_base_url or base_url))
            principal = hit or await run_in_threadpool(self.verifier.verify, token, base_url)
        except InvalidToken as exc:
            return await _deny(send, realm, f"The access token is not valid: {exc}")
        except IdentityRefused as exc:
            return await _send_outcome(send, exc.error.status, exc.error.issues, {})
        except SQLAlchemyError:  # the revocation list or the keys could not be read: transient
            log.warning("token check failed on a database error", exc_info=True)
            return await _send_outcome(
                send, 503, [Issue("error", "transient", "The access token cannot be checked right now; retry shortly")], {"Retry-After": "1"}
            )
        if self.rate_limiter is not None:
            retry = self.rate_limiter.hit(principal.client_id or principal.subject)
            if retry is not None:
                return await _send_outcome(
                    send, 429, [Issue("error", "throttled", f"Too many requests from this client; retry after {retry} s")], {"Retry-After": str(retry)}
                )
        state["principal"] = principal
        return await self.app(scope, receive, send)


def _cache_key(token: str, audience: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest() + "|" + audience.rstrip("/")


async def _deny(send, realm: str, message: str):
    realm = realm.replace('"', "")
    headers = {"WWW-Authenticate": f'Bearer realm="{realm}", error="invalid_token", error_description="{_quote(message)}"'}
    return await _send_outcome(send, 401, [Issue("error", "login", message)], headers)


def _quote(text: str) -> str:
    # error_description: %x20-21 / %x23-5B / %x5D-7E (RFC 6750 §3)
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')


async def _send_outcome(send, status: int, issues, headers: dict):
    body = orjson.dumps(operation_outcome(issues))
    raw = [(b"content-type", b"application/fhir+json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def error_of(exc: FhirError) -> tuple[int, list]:
    return exc.status, exc.issues
