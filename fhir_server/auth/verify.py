"""Bearer token verification for the resource server (RFC 6750, RFC 7519, SMART App Launch 2.0).

Every token is checked with joserfc: signature (RS256, ES256, RS384, ES384; never
`none` or an HMAC), `iss` among the trusted issuers, `aud` equal to this server's FHIR
base (or the issuer's configured audience), `exp`/`nbf`/`iat` with `auth_clock_skew`
seconds of leeway. Keys: the built-in issuer's own (KeyCache); an external OpenID
Provider's from the JWKS its discovery document names, cached and re-fetched when a
token names an unknown `kid` (key rotation), at most once per
`auth_jwks_refetch_seconds`.

A verified token is cached by its SHA-256 until it expires, so repeated requests with
the same token pay a dictionary lookup, not a signature check. The cache holds the
verified result; a token that fails is never cached, and a revoked one is evicted.

Revocation reaches every process: the revocation list is the `auth_grants` table
(RFC 7009, kept by the authorization server), and a cached built-in token is only
trusted for `auth_revocation_check_seconds` (default 5 s) after its last look at that
list; then the next request asks the database again (one primary-key probe, no
signature check). A token revoked through any process is thus refused by all of them
within that bound; 0 asks on every request.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..errors import FhirError
from ..security.authz import Principal

ALGORITHMS = ("RS256", "ES256", "RS384", "ES384")
CACHE_SIZE = 10_000


class InvalidToken(Exception):
    """The token is missing, malformed, expired, badly signed or from an untrusted issuer."""


@dataclass
class ExternalIssuer:
    """A trusted external OpenID Provider (an eID broker), from `auth_issuers_file`.

    JSON: {"issuer": "https://broker.example", "audience": "<FHIR base>" (default: this
    server's base), "jwks_uri": optional (default: from discovery),
    "identity_claims": {"personnummer": "<system URI or alias>", "pesel": "...", ...}
    (the first claim present names the person; or the single pair "national_id_claim" /
    "national_id_system"), "identity_type": "Patient" | "Practitioner",
    "scope": "patient/*.rs" (default scopes when the token carries none),
    "unknown_person": "refuse" | "create" (default: auth_unknown_person),
    "login_client_id" / "login_client_secret": this server as a client of the provider,
    for the authorize step's login (login.py)}"""

    issuer: str
    audience: str | None = None
    jwks_uri: str | None = None
    national_id_claim: str | None = None
    national_id_system: str | None = None
    identity_claims: dict[str, str] = field(default_factory=dict)
    identity_type: str = "Patient"
    scope: str = ""
    unknown_person: str | None = None
    login_client_id: str | None = None  # this server's client id at the provider: use it for the authorize step's login
    login_client_secret: str | None = None
    _keys: KeySet | None = field(default=None, repr=False)
    _fetched: float = field(default=0.0, repr=False)


def load_issuers(path: str) -> list[ExternalIssuer]:
    """The trusted external issuers of `auth_issuers_file`; ValueError naming the file, the
    entry and the fault (a typo must stop the start, not turn staff logins into patients)."""
    if not path:
        return []
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of issuers")
    out = []
    for n, item in enumerate(data):
        try:
            if not isinstance(item, dict):
                raise ValueError("expected an object")
            issuer = ExternalIssuer(**{k: v for k, v in item.items() if not k.startswith("_")})
            _check_issuer(issuer)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: issuer entry {n}: {exc}") from None
        out.append(issuer)
    return out


def _check_issuer(issuer: ExternalIssuer) -> None:
    from ..identifiers.registry import scheme_for_system

    if not isinstance(issuer.issuer, str) or not issuer.issuer.startswith(("https://", "http://")):
        raise ValueError(f"issuer must be an http(s) URL, not {issuer.issuer!r}")
    if issuer.identity_type not in ("Patient", "Practitioner"):
        raise ValueError(f"identity_type must be Patient or Practitioner, not {issuer.identity_type!r}")
    if issuer.unknown_person not in (None, "refuse", "create"):
        raise ValueError(f"unknown_person must be refuse or create, not {issuer.unknown_person!r}")
    mapping = dict(issuer.identity_claims or {})
    if issuer.national_id_claim or issuer.national_id_system:
        mapping[str(issuer.national_id_claim)] = issuer.national_id_system
    for claim, system in mapping.items():
        if not isinstance(system, str) or scheme_for_system(system) is None:
            raise ValueError(f"the claim {claim!r} names {system!r}, which is no known national identifier system")


class TokenVerifier:
    """Verify bearer tokens; thread-safe; one per app."""

    def __init__(self, settings, key_cache, db, issuers: list[ExternalIssuer] | None = None):
        self.settings = settings
        self.keys = key_cache
        self.db = db
        self.issuers = {i.issuer.rstrip("/"): i for i in (issuers or [])}
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._checked: dict[str, float] = {}  # cache key -> monotonic time of its last revocation check
        self._lock = threading.Lock()
        self.revoked_check = None  # callable(jti) -> bool, set by the authorization server

    # ------------------------------------------------------------------ cache

    def _revocable(self, principal: Principal) -> bool:
        return self.revoked_check is not None and principal.issuer is not None and \
            principal.issuer.rstrip("/") not in self.issuers and isinstance(principal.claims.get("jti"), str)

    def _cached(self, key: str, stale_ok: bool = False) -> Principal | None:
        """The cached principal; None when absent, expired, or (unless `stale_ok`) due
        for a fresh look at the revocation list."""
        with self._lock:
            p = self._cache.get(key)
            if p is None:
                return None
            if p.expires_at is not None and p.expires_at <= time.time():
                self._cache.pop(key, None)
                self._checked.pop(key, None)
                return None
            if not stale_ok and self._revocable(p):
                checked = self._checked.get(key, 0.0)
                if time.monotonic() - checked >= float(self.settings.auth_revocation_check_seconds):
                    return None
            self._cache.move_to_end(key)
            return p

    def _remember(self, key: str, principal: Principal) -> None:
        with self._lock:
            self._cache[key] = principal
            self._checked[key] = time.monotonic()
            while len(self._cache) > CACHE_SIZE:
                old, _p = self._cache.popitem(last=False)
                self._checked.pop(old, None)

    def evict(self, token: str) -> None:
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        with self._lock:
            for k in [k for k in self._cache if k.startswith(digest)]:
                self._cache.pop(k, None)
                self._checked.pop(k, None)

    # ------------------------------------------------------------------ verification

    def verify(self, token: str, base_url: str) -> Principal:
        """The Principal of a valid token for the FHIR base `base_url`; InvalidToken otherwise.
        Blocking (may fetch a JWKS or query the database): call from a worker thread."""
        audience = (self.settings.auth_base_url or base_url).rstrip("/")
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest() + "|" + audience
        hit = self._cached(key)
        if hit is not None:
            return hit
        stale = self._cached(key, stale_ok=True)
        if stale is not None:  # verified before; only the revocation list needs a fresh look
            if self.revoked_check(stale.claims["jti"]):
                self.evict(token)
                raise InvalidToken("the token has been revoked")
            with self._lock:
                self._checked[key] = time.monotonic()
            return stale
        principal = self._verify(token, audience)
        self._remember(key, principal)
        return principal

    def _verify(self, token: str, audience: str) -> Principal:
        if len(token) > 16_384:
            raise InvalidToken("the token is too long")
        try:
            compact = jws.extract_compact(token.encode("ascii"))
            header = compact.protected
            unverified = json.loads(compact.payload)
        except (JoseError, ValueError, UnicodeError, TypeError):
            raise InvalidToken("the token is not a well-formed JWT") from None
        if not isinstance(unverified, dict) or not isinstance(header, dict):
            raise InvalidToken("the token is not a well-formed JWT")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"algorithm {alg!r} is not accepted (use one of {', '.join(ALGORITHMS)})")
        iss = unverified.get("iss")
        if not isinstance(iss, str):
            raise InvalidToken("the token has no issuer (iss)")
        iss = iss.rstrip("/")
        external = self.issuers.get(iss)
        if iss == audience:
            jwk = self.keys.find(header.get("kid"))
            expected_aud = audience
        elif external is not None:
            jwk = self._external_key(external, header.get("kid"))
            expected_aud = (external.audience or audience).rstrip("/")
        else:
            raise InvalidToken(f"the issuer {iss!r} is not trusted by this server, whose own issuer (and the audience its tokens "
                               f"must name) is {audience!r} here: `fhir-server token --audience {audience}`")
        if jwk is None:
            raise InvalidToken(f"no key {header.get('kid')!r} is known for issuer {iss!r}")
        try:
            verified = jwt.decode(token, jwk, algorithms=[alg])
            registry = jwt.JWTClaimsRegistry(
                leeway=self.settings.auth_clock_skew,
                exp={"essential": True},
                aud={"essential": True, "values": [expected_aud, expected_aud + "/"]},
            )
            registry.validate(verified.claims)
        except JoseError as exc:
            raise InvalidToken(_describe(exc)) from None
        except (ValueError, TypeError):
            raise InvalidToken("the token's claims are malformed") from None
        claims = verified.claims
        if external is None:
            return self._builtin_principal(claims)
        return self._external_principal(external, claims)

    def _builtin_principal(self, claims: dict) -> Principal:
        jti = claims.get("jti")
        if self.revoked_check is not None and isinstance(jti, str) and self.revoked_check(jti):
            raise InvalidToken("the token has been revoked")
        return _principal(claims, claims.get("scope"))

    def _external_principal(self, issuer: ExternalIssuer, claims: dict) -> Principal:
        scope = claims.get("scope")
        if isinstance(claims.get("scp"), list):
            scope = " ".join(str(s) for s in claims["scp"])
        principal = _principal(claims, scope or issuer.scope)
        mapping = dict(issuer.identity_claims)
        if issuer.national_id_claim and issuer.national_id_system:
            mapping.setdefault(issuer.national_id_claim, issuer.national_id_system)
        if mapping:
            found = [(c, sys_) for c, sys_ in mapping.items() if isinstance(claims.get(c), str) and claims[c].strip()]
            if not found:
                raise InvalidToken(f"the token carries none of the national identity claims {', '.join(mapping)}")
            claim, system = found[0]
            value = claims[claim]
            from .identity import patient_for, resolve

            try:
                if issuer.identity_type == "Practitioner":
                    pid = resolve(self.db, system, value, "Practitioner")
                    if pid is None:
                        raise FhirError.of(403, "forbidden", "No practitioner is registered for this national identity")
                    principal.fhir_user = f"Practitioner/{pid}"
                else:
                    unknown = issuer.unknown_person or self.settings.auth_unknown_person
                    pid = patient_for(self.db, self.settings, system, value, claims, unknown)
                    principal.patient = pid
                    principal.fhir_user = f"Patient/{pid}"
            except FhirError as exc:
                raise IdentityRefused(exc) from None
        return principal

    def _external_key(self, issuer: ExternalIssuer, kid):
        keys = issuer._keys
        if keys is None or _find(keys, kid) is None:
            now = time.monotonic()
            if keys is None or now - issuer._fetched >= self.settings.auth_jwks_refetch_seconds:
                issuer._fetched = now
                try:
                    issuer._keys = keys = KeySet.import_key_set(self._fetch_jwks(issuer))
                except (httpx.HTTPError, ValueError, KeyError, JoseError) as exc:
                    raise InvalidToken(f"the keys of issuer {issuer.issuer!r} could not be fetched ({type(exc).__name__})") from None
        return _find(keys, kid) if keys is not None else None

    def _fetch_jwks(self, issuer: ExternalIssuer) -> dict:
        uri = issuer.jwks_uri
        with httpx.Client(timeout=10) as client:
            if not uri:
                conf = client.get(issuer.issuer.rstrip("/") + "/.well-known/openid-configuration")
                conf.raise_for_status()
                uri = conf.json()["jwks_uri"]
            r = client.get(uri)
            r.raise_for_status()
            return r.json()


class IdentityRefused(Exception):
    """The token is valid but names a person the server refuses (403)."""

    def __init__(self, error: FhirError):
        self.error = error


def _find(keys: KeySet, kid):
    for k in keys.keys:
        if kid is None or k.kid == kid:
            return k
    return None


def _describe(exc: JoseError) -> str:
    name = type(exc).__name__
    if name == "ExpiredTokenError":
        return "the token has expired"
    if name == "BadSignatureError":
        return "the token's signature does not verify"
    if name in ("InvalidClaimError", "MissingClaimError"):
        return f"the token's claims are not valid here ({exc.description if hasattr(exc, 'description') else exc})"
    return f"the token is not valid ({name})"


def _principal(claims: dict, scope) -> Principal:
    scopes = frozenset(str(scope).split()) if scope else frozenset()
    patient = claims.get("patient")
    fhir_user = claims.get("fhirUser")
    exp = claims.get("exp")
    return Principal(
        subject=str(claims.get("sub") or claims.get("client_id") or "unknown"),
        scopes=scopes,
        claims=claims,
        client_id=str(claims.get("client_id") or claims.get("azp") or "") or None,
        issuer=str(claims.get("iss")),
        patient=str(patient) if isinstance(patient, str) and patient else None,
        fhir_user=str(fhir_user) if isinstance(fhir_user, str) and fhir_user else None,
        authenticated=True,
        expires_at=float(exp) if isinstance(exp, (int, float)) else None,
    )
