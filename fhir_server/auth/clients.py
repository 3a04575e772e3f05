"""OAuth clients of the built-in authorization server.

Registered in configuration (`auth_clients_file`, a JSON list) or in the database
(`fhir-server client add ...`). A client's metadata (RFC 7591 names):

- `client_id`; `redirect_uris` (authorization code clients);
- `scope`: the scopes it may be granted (requests are narrowed to these);
- `token_endpoint_auth_method`: `none` (public app, PKCE), `client_secret_basic` /
  `client_secret_post` (confidential, `client_secret_sha256` holds the hash), or
  `private_key_jwt` (SMART Backend Services / asymmetric; `jwks` or `jwks_uri`);
- `grant_types`: default `client_credentials` for private_key_jwt clients, else
  `authorization_code` + `refresh_token`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from authlib.oauth2.rfc6749 import ClientMixin
from sqlalchemy import delete, insert, select

from ..security.scopes import narrow
from ..storage.schema import auth_clients

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
JWKS_TTL = 300  # seconds a fetched client JWKS is used before it is fetched again

# Backend clients' JWKS fetched from their jwks_uri, shared by every Client object of the
# process: uri -> (monotonic time of the fetch, the JWKS)
_jwks_cache: dict[str, tuple[float, dict]] = {}
_jwks_lock = threading.Lock()


def _kids(jwks: dict) -> set:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    return {k.get("kid") for k in keys if isinstance(k, dict)} if isinstance(keys, list) else set()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Client(ClientMixin):
    def __init__(self, meta: dict, refetch_seconds: float = 30):
        self.meta = meta
        self.refetch_seconds = refetch_seconds
        self.client_id: str = meta["client_id"]
        self.redirect_uris: list[str] = list(meta.get("redirect_uris") or [])
        self.scope: str = meta.get("scope") or ""
        self.auth_method: str = meta.get("token_endpoint_auth_method") or ("private_key_jwt" if meta.get("jwks") or meta.get("jwks_uri") else "none")
        default_grants = ["client_credentials"] if self.auth_method == "private_key_jwt" and not self.redirect_uris else ["authorization_code", "refresh_token"]
        self.grant_types: list[str] = list(meta.get("grant_types") or default_grants)

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        return narrow(scope or "", self.scope) if scope else ""

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        stored = self.meta.get("client_secret_sha256")
        return bool(stored) and hmac.compare_digest(stored, hash_secret(client_secret or ""))

    def check_endpoint_auth_method(self, method, endpoint):
        return method == self.auth_method

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types

    def public_jwks(self, kid: str | None = None) -> dict:
        """The client's public keys: inline `jwks`, or `jwks_uri` fetched and cached for
        JWKS_TTL seconds. An assertion naming a `kid` the cached set lacks (the client
        rotated its key) fetches again, at most once per `refetch_seconds`
        (auth_jwks_refetch_seconds). httpx.HTTPError / ValueError when it cannot be fetched."""
        if self.meta.get("jwks"):
            return self.meta["jwks"]
        uri = self.meta.get("jwks_uri")
        if not uri:
            return {"keys": []}
        now = time.monotonic()
        with _jwks_lock:
            cached = _jwks_cache.get(uri)
        if cached is not None:
            age = now - cached[0]
            fresh = age < JWKS_TTL
            if fresh and (kid is None or kid in _kids(cached[1]) or age < self.refetch_seconds):
                return cached[1]
        r = httpx.get(uri, timeout=10)
        r.raise_for_status()
        jwks = r.json()
        with _jwks_lock:
            _jwks_cache[uri] = (time.monotonic(), jwks)
        return jwks


def validate_metadata(meta: dict) -> dict:
    """Check a client's metadata; ValueError with the reason."""
    if not isinstance(meta.get("client_id"), str) or not meta["client_id"].strip():
        raise ValueError("client_id is required")
    method = meta.get("token_endpoint_auth_method") or ("private_key_jwt" if meta.get("jwks") or meta.get("jwks_uri") else "none")
    if method not in AUTH_METHODS:
        raise ValueError(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    if method == "private_key_jwt" and not (meta.get("jwks") or meta.get("jwks_uri")):
        raise ValueError("a private_key_jwt client needs jwks or jwks_uri")
    if method.startswith("client_secret") and not meta.get("client_secret_sha256"):
        raise ValueError("a client_secret client needs a secret")
    for uri in meta.get("redirect_uris") or []:
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise ValueError(f"redirect URI {uri!r} must be an absolute http(s) URL")
    meta["token_endpoint_auth_method"] = method
    return meta


class ClientRegistry:
    def __init__(self, engine, settings):
        self.engine = engine
        self.refetch_seconds = float(settings.auth_jwks_refetch_seconds)
        self.configured: dict[str, dict] = {}
        if settings.auth_clients_file:
            for meta in json.loads(Path(settings.auth_clients_file).read_text()):
                if meta.get("client_secret") and not meta.get("client_secret_sha256"):
                    meta["client_secret_sha256"] = hash_secret(meta.pop("client_secret"))
                meta = validate_metadata(meta)
                self.configured[meta["client_id"]] = meta

    def get(self, client_id: str) -> Client | None:
        if not isinstance(client_id, str) or not client_id:
            return None
        if client_id in self.configured:
            return Client(self.configured[client_id], self.refetch_seconds)
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_clients.c.metadata).where(auth_clients.c.client_id == client_id)).first()
        return Client(json.loads(row[0]), self.refetch_seconds) if row else None


def add_client(engine, meta: dict) -> None:
    """Register (or replace) a client in the database."""
    meta = validate_metadata(meta)
    with engine.begin() as conn:
        conn.execute(delete(auth_clients).where(auth_clients.c.client_id == meta["client_id"]))
        conn.execute(insert(auth_clients).values(client_id=meta["client_id"], metadata=json.dumps(meta), created=datetime.now(timezone.utc)))
