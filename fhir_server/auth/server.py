"""The built-in OAuth 2.0 authorization server, on Authlib's framework-neutral core.

Grants (SMART App Launch 2.0):
- authorization code with PKCE, S256 required (RFC 7636) — portal apps;
- client credentials authenticated by `private_key_jwt` with RS384/ES384 assertions
  (SMART Backend Services; RFC 7523), assertions used once (`jti`), at most 5 minutes ahead;
- refresh token, rotated at every use (the old one stops working).
Endpoints: token, introspection (RFC 7662), revocation (RFC 7009).

Access tokens are JWTs from `tokens.issue_access_token`, so the resource server verifies
them like any other (no database round trip per request).
"""

from __future__ import annotations

import secrets
import threading
import time

from authlib.oauth2.rfc6749 import AuthorizationServer, OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..security.scopes import is_known_scope
from .clients import ClientRegistry
from .grants import CodeRecord, GrantStore, RefreshRecord, User, user_dict
from .tokens import issue_access_token

CODE_TTL = 300
ASSERTION_ALGS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300  # SMART Backend Services: exp no more than five minutes in the future
SECRET_AUTH = ["client_secret_basic", "client_secret_post"]


class FormRequest(OAuth2Request):
    """An OAuth2Request from already-read form and query data. `headers` must look names up
    case-insensitively (the request's own Headers): Authlib asks for "Authorization"."""

    def __init__(self, method: str, uri: str, headers, form: dict, args: dict):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self._args = args
        self.payload = BasicOAuth2Payload({**args, **form} if method == "GET" else form)

    @property
    def args(self):
        return self._args

    @property
    def form(self):
        return self._form


class PrivateKeyJwt(JWTBearerClientAssertion):
    """Client authentication by a signed JWT assertion (SMART Backend Services)."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: "SmartAuthorizationServer"):
        super().__init__(token_url=None, validate_jti=True, leeway=server.settings.auth_clock_skew)
        self.server = server
        self._local = threading.local()

    def get_audiences(self):
        return [self.server.endpoint("token_endpoint")]

    def validate_jti(self, claims, jti):
        ttl = max(60, int(claims.get("exp", time.time()) - time.time()) + self.leeway)
        return self.server.store.once("jti", f"{claims.get('iss')}\x1f{jti}", str(claims.get("iss")), ttl)

    def resolve_client_public_key(self, client, kid: str | None = None):
        self._local.client = client  # for a second look in process_assertion_claims (same thread)
        try:
            return KeySet.import_key_set(client.public_jwks(kid))
        except Exception as exc:  # an unreachable or malformed JWKS is the client's failure
            raise InvalidClientError(description=f"the client's keys cannot be used ({type(exc).__name__})") from None

    def process_assertion_claims(self, assertion, resolve_key):
        kid = _assertion_kid(assertion)
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None and kid and isinstance(resolve_key, KeySet) and kid not in {k.kid for k in resolve_key.keys}:
            resolve_key = self.resolve_client_public_key(client, kid)  # the client may have rotated its key
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGS)
        except JoseError as exc:
            raise InvalidClientError(description=f"client assertion rejected: {exc.description or type(exc).__name__} (signed with {' or '.join(ASSERTION_ALGS)}?)") from None
        self.verify_claims(token.claims)
        exp = token.claims.get("exp")
        if not isinstance(exp, (int, float)) or exp > time.time() + MAX_ASSERTION_LIFETIME + self.leeway:
            raise InvalidClientError(description="the client assertion's exp must be at most five minutes ahead")
        return token.claims


def _assertion_kid(assertion) -> str | None:
    try:
        header = jws.extract_compact(assertion.encode("ascii") if isinstance(assertion, str) else assertion).protected
    except Exception:  # malformed: jwt.decode below says so
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


class S256Required(CodeChallenge):
    """PKCE as SMART App Launch 2.0 requires it: a code_challenge on every authorization
    request, method S256 (never `plain`)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        return super().validate_code_challenge(grant, redirect_uri)


class IdTokenNonce:
    """OpenID Connect Core 3.1.3.6: the ID token of an authorization code carries the
    `nonce` of the authorization request (when it had one) and the `auth_time` of the login.
    A grant extension: runs after the token response is made, and re-signs the ID token."""

    def __init__(self, server: "SmartAuthorizationServer"):
        self.server = server

    def __call__(self, grant):
        grant.register_hook("after_create_token_response", self.process_token)

    def process_token(self, grant, response):
        _status, token, _headers = response
        code = getattr(grant.request, "authorization_code", None)
        if not isinstance(token, dict) or "id_token" not in token or code is None:
            return
        claims = jwt.decode(token["id_token"], self.server.keys.get().all).claims  # ours, made just now
        nonce, auth_time = code.get_nonce(), code.get_auth_time()
        if nonce:
            claims["nonce"] = nonce
        if auth_time:
            claims["auth_time"] = auth_time
        key = self.server.keys.get().current
        token["id_token"] = jwt.encode({"alg": key.alg, "kid": key.kid}, claims, key)


class AuthorizationCode(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", *SECRET_AUTH, "private_key_jwt"]

    def save_authorization_code(self, code, request):
        p = request.payload
        data = {
            "redirect_uri": p.redirect_uri,
            "scope": request.client.get_allowed_scope(p.scope),
            "code_challenge": p.data.get("code_challenge"),
            "code_challenge_method": p.data.get("code_challenge_method") or "plain",
            "nonce": p.data.get("nonce"),
            "user": user_dict(request.user),
            "auth_time": int(time.time()),
        }
        self.server.store.put("code", code, request.client.get_client_id(), data, CODE_TTL)

    def query_authorization_code(self, code, client):
        grant = self.server.store.get("code", code)
        if grant is None or grant.used or grant.expired or grant.client_id != client.get_client_id():
            return None
        return CodeRecord(code, grant)

    def delete_authorization_code(self, authorization_code):
        self.server.store.use("code", authorization_code.code)

    def authenticate_user(self, authorization_code):
        return authorization_code.user


class ClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt", *SECRET_AUTH]


class RefreshToken(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", *SECRET_AUTH, "private_key_jwt"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        grant = self.server.store.get("refresh", refresh_token)
        if grant is None or grant.used or grant.expired:
            return None
        return RefreshRecord(refresh_token, grant)

    def authenticate_user(self, refresh_token):
        return refresh_token.user

    def revoke_old_credential(self, refresh_token):
        self.server.store.use("refresh", refresh_token.token)


class AccessRecord:
    """An access token (JWT of this issuer) as introspection/revocation see it."""

    def __init__(self, token: str, claims: dict):
        self.token = token
        self.claims = claims
        self.client_id = claims.get("client_id")

    def is_expired(self):
        return float(self.claims.get("exp", 0)) <= time.time()

    def is_revoked(self):
        return False

    def get_scope(self):
        return self.claims.get("scope", "")


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["none", *SECRET_AUTH, "private_key_jwt"]

    def __init__(self, server):
        super().__init__(server)
        self.smart = server

    def query_token(self, token_string, token_type_hint):
        return self.smart.find_token(token_string, token_type_hint)

    def check_permission(self, token, client, request):
        return token.client_id == client.get_client_id() if isinstance(token, AccessRecord) else token.check_client(client)

    def introspect_token(self, token):
        if isinstance(token, AccessRecord):
            c = token.claims
            out = {"active": True, "token_type": "Bearer", **{k: c[k] for k in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "patient", "fhirUser") if k in c}}
            return out
        g = token.grant
        return {"active": True, "token_type": "refresh_token", "scope": token.get_scope(), "client_id": g.client_id, "exp": int(g.expires.timestamp()), "sub": token.user.subject}


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["none", *SECRET_AUTH, "private_key_jwt"]

    def __init__(self, server):
        super().__init__(server)
        self.smart = server

    def query_token(self, token_string, token_type_hint):
        token = self.smart.find_token(token_string, token_type_hint)
        return token

    def revoke_token(self, token, request):
        self.smart.revoke(token)

    def authenticate_token(self, request, client):
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        owner = token.client_id if isinstance(token, AccessRecord) else (token.grant.client_id if token else None)
        if token and owner == client.get_client_id():
            return token
        return None


class SmartAuthorizationServer(AuthorizationServer):
    def __init__(self, db, settings, keys, verifier):
        super().__init__(scopes_supported=None)
        self.db = db
        self.settings = settings
        self.keys = keys
        self.verifier = verifier
        self.clients = ClientRegistry(db.engine, settings)
        self.store = GrantStore(db.engine)
        self._local = threading.local()
        verifier.revoked_check = lambda jti: self.store.exists("revoked", jti)
        self.register_token_generator("default", self._generate)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJwt(self))
        self.register_grant(AuthorizationCode, [S256Required(required=True), IdTokenNonce(self)])
        self.register_grant(ClientCredentials)
        self.register_grant(RefreshToken)
        self.register_endpoint(Introspection(self))
        self.register_endpoint(Revocation(self))

    # --- per-request base URL (Authlib calls our hooks without the request)

    def bind(self, endpoints: dict) -> None:
        self._local.endpoints = endpoints

    def endpoint(self, name: str) -> str:
        return self._local.endpoints[name]

    # --- Authlib hooks

    def query_client(self, client_id):
        return self.clients.get(client_id)

    def save_token(self, token, request):
        refresh = token.get("refresh_token")
        if refresh:
            user = request.user or getattr(request.credential, "user", None)
            data = {"scope": token.get("scope", ""), "user": user_dict(user)}
            self.store.put("refresh", refresh, request.client.get_client_id(), data, self.settings.auth_refresh_ttl)

    def create_oauth2_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        return status, body, headers

    def send_signal(self, name, *args, **kwargs):
        return None

    def validate_requested_scope(self, scope):
        for s in (scope or "").split():
            if not is_known_scope(s):
                raise InvalidScopeError(description=f"unknown scope '{s}'")

    def _generate(self, grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True):
        scope = client.get_allowed_scope(scope or "")  # never more than the client is registered for
        ttl = self.settings.auth_token_ttl
        issuer = self.endpoint("issuer")
        if user is None:  # client credentials: the client itself is the subject
            user = User(subject=client.get_client_id())
        patient = user.patient if user.patient and ("launch/patient" in scope.split() or "patient/" in scope) else None
        fhir_user = user.fhir_user if {"fhirUser", "openid"} & set(scope.split()) or user.fhir_user else None
        if not fhir_user:  # user/ scopes are bounded by the user's access: with no known user they are not granted
            scope = " ".join(s for s in scope.split() if not s.startswith("user/"))
        key = self.keys.get().current
        token = {
            "token_type": "Bearer",
            "access_token": issue_access_token(key, issuer, issuer, scope, user.subject, client.get_client_id(), ttl, patient, fhir_user),
            "expires_in": ttl,
            "scope": scope,
        }
        if patient:
            token["patient"] = patient
        if "openid" in scope.split():
            claims = {"iss": issuer, "aud": client.get_client_id(), "sub": user.subject, "iat": int(time.time()), "exp": int(time.time()) + ttl}
            if user.fhir_user:
                claims["fhirUser"] = f"{issuer}/{user.fhir_user}"
            token["id_token"] = jwt.encode({"alg": key.alg, "kid": key.kid}, claims, key)
        wants_refresh = {"offline_access", "online_access"} & set(scope.split())
        if include_refresh_token and grant_type != "client_credentials" and wants_refresh:
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    # --- tokens for introspection / revocation

    def find_token(self, token_string: str, hint: str | None):
        if hint != "refresh_token" and token_string.count(".") == 2:
            try:
                principal = self.verifier.verify(token_string, self.endpoint("issuer"))
                return AccessRecord(token_string, principal.claims)
            except Exception:
                return None
        grant = self.store.get("refresh", token_string)
        return RefreshRecord(token_string, grant) if grant is not None else None

    def revoke(self, token) -> None:
        if isinstance(token, AccessRecord):
            jti = token.claims.get("jti")
            if jti:
                ttl = max(1, int(float(token.claims.get("exp", 0)) - time.time()) + self.settings.auth_clock_skew)
                self.store.once("revoked", jti, token.client_id or "", ttl)
            self.verifier.evict(token.token)
        elif token is not None:
            self.store.use("refresh", token.token)
