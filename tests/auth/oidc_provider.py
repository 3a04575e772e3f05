"""A small OpenID Provider for the tests, built on Authlib, run as a separate process:

    python -m tests.auth.oidc_provider PORT AUDIENCE USERS_JSON

It plays the eID broker in front of BankID / MitID / Profil Zaufany: OpenID discovery,
a JWKS, and a token endpoint (Authlib's resource-owner password grant: username and
password from USERS_JSON) that issues RS256 JWT access tokens for AUDIENCE carrying the
person's claims (personnummer, pesel, cpr, names). POST /rotate makes a new signing key
(the JWKS then holds only the new key; body "ES256" for a P-256 key, else RS256), to test
key rotation at the resource server; GET /stats says how often the JWKS was fetched.

It also serves the OpenID Connect authorization code flow (PKCE S256) with ID tokens, for
the FHIR server's authorize step. There is no login page: POST /next-login with a username
says who authenticates at the next /authorize (the person at the eID app).
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import uvicorn
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request, grants
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class PublicClient(ClientMixin):
    def __init__(self, client_id: str):
        self.client_id = client_id

    def get_client_id(self):
        return self.client_id

    def get_allowed_scope(self, scope):
        return scope or ""

    def check_endpoint_auth_method(self, method, endpoint):
        return method == "none"

    def check_grant_type(self, grant_type):
        return grant_type in ("password", "authorization_code")

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri.endswith("/auth/callback")

    def check_response_type(self, response_type):
        return response_type == "code"

    def get_default_redirect_uri(self):
        return None


class Code:
    def __init__(self, code, data):
        self.code = code
        self.data = data
        self.code_challenge = data["code_challenge"]
        self.code_challenge_method = data["code_challenge_method"]

    def get_redirect_uri(self):
        return self.data["redirect_uri"]

    def get_scope(self):
        return self.data["scope"]


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def save_authorization_code(self, code, request):
        p = request.payload
        self.server.codes[code] = {"client_id": request.client.client_id, "redirect_uri": p.redirect_uri, "scope": p.scope,
                                   "nonce": p.data.get("nonce"), "user": request.user.username,
                                   "code_challenge": p.data.get("code_challenge"), "code_challenge_method": p.data.get("code_challenge_method")}

    def query_authorization_code(self, code, client):
        data = self.server.codes.get(code)
        return Code(code, data) if data and data["client_id"] == client.client_id else None

    def delete_authorization_code(self, authorization_code):
        self.server.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code):
        self.server.pending_nonce = authorization_code.data["nonce"]
        name = authorization_code.data["user"]
        return User(name, self.server.users[name]["claims"])


class User:
    def __init__(self, username: str, claims: dict):
        self.username = username
        self.claims = claims

    def get_user_id(self):
        return self.username


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def authenticate_user(self, username, password):
        entry = self.server.users.get(username)
        if entry and entry["password"] == password:
            return User(username, entry["claims"])
        return None


class FormRequest(OAuth2Request):
    def __init__(self, uri, headers, form, method="POST"):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self):
        return self._form if self.method == "POST" else {}

    @property
    def args(self):
        return self._form if self.method == "GET" else {}


class Provider(AuthorizationServer):
    def __init__(self, issuer: str, audience: str, users: dict):
        super().__init__()
        self.issuer = issuer
        self.audience = audience
        self.users = users
        self.key = self._new_key()
        self.codes: dict = {}
        self.next_login: str | None = None
        self.pending_nonce: str | None = None
        self.register_grant(PasswordGrant)
        self.register_grant(CodeGrant, [CodeChallenge(required=True)])
        self.register_token_generator("default", self._token)

    @staticmethod
    def _new_key(alg: str = "RS256"):
        params = {"kid": uuid.uuid4().hex[:12], "alg": alg, "use": "sig"}
        if alg == "ES256":
            return ECKey.generate_key("P-256", private=True, parameters=params)
        return RSAKey.generate_key(2048, private=True, parameters=params)

    def query_client(self, client_id):
        return PublicClient(client_id) if client_id in ("portal", "fhir-server") else None

    def save_token(self, token, request):
        return None

    def create_oauth2_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        return JSONResponse(body, status_code=status, headers=dict(headers))

    def send_signal(self, *a, **k):
        return None

    def _token(self, grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True):
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": user.username, "iat": now, "exp": now + 600, "azp": client.client_id, **user.claims}
        if scope:
            claims["scope"] = scope
        alg = self.key.alg
        token = jwt.encode({"alg": alg, "kid": self.key.kid}, claims, self.key, algorithms=[alg])
        out = {"token_type": "Bearer", "access_token": token, "expires_in": 600}
        if grant_type == "authorization_code":
            id_claims = {"iss": self.issuer, "aud": client.client_id, "sub": user.username, "iat": now, "exp": now + 300,
                         "nonce": self.pending_nonce, **user.claims}
            out["id_token"] = jwt.encode({"alg": alg, "kid": self.key.kid}, id_claims, self.key, algorithms=[alg])
        return out


def make_app(port: int, audience: str, users: dict) -> Starlette:
    issuer = f"http://127.0.0.1:{port}"
    provider = Provider(issuer, audience, users)
    stats = {"jwks_fetches": 0}

    async def discovery(request: Request):
        return JSONResponse({"issuer": issuer, "jwks_uri": f"{issuer}/jwks", "token_endpoint": f"{issuer}/token",
                             "authorization_endpoint": f"{issuer}/authorize", "response_types_supported": ["code"],
                             "grant_types_supported": ["password", "authorization_code"], "id_token_signing_alg_values_supported": ["RS256", "ES256"]})

    async def authorize(request: Request):
        who = provider.next_login
        provider.next_login = None
        if who is None:
            return Response("nobody is logging in", status_code=401)
        req = FormRequest(str(request.url), dict(request.headers), dict(request.query_params), method="GET")
        user = User(who, users[who]["claims"])
        grant = provider.get_consent_grant(req, end_user=user)
        return provider.create_authorization_response(req, grant_user=user, grant=grant)

    async def next_login(request: Request):
        provider.next_login = (await request.body()).decode()
        return Response("ok")

    async def jwks(request: Request):
        stats["jwks_fetches"] += 1
        return JSONResponse({"keys": [provider.key.as_dict(private=False)]})

    async def token(request: Request):
        form = {k: str(v) for k, v in (await request.form()).items()}
        return provider.create_token_response(FormRequest(str(request.url), dict(request.headers), form))

    async def rotate(request: Request):
        provider.key = provider._new_key((await request.body()).decode() or "RS256")
        return Response(provider.key.kid)

    async def get_stats(request: Request):
        return JSONResponse(stats)

    return Starlette(routes=[
        Route("/.well-known/openid-configuration", discovery),
        Route("/jwks", jwks),
        Route("/token", token, methods=["POST"]),
        Route("/authorize", authorize),
        Route("/next-login", next_login, methods=["POST"]),
        Route("/rotate", rotate, methods=["POST"]),
        Route("/stats", get_stats),
    ])


if __name__ == "__main__":
    port, audience, users_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(users_file) as fh:
        users = json.load(fh)
    uvicorn.run(make_app(port, audience, users), host="127.0.0.1", port=port, log_level="warning")
