"""A small OpenID Provider for the tests, built on Authlib, run as a separate process:

    python -m tests.auth.oidc_provider PORT AUDIENCE USERS_JSON

It plays the eID broker in front of BankID / MitID / Profil Zaufany: OpenID discovery,
a JWKS, and a token endpoint (Authlib's resource-owner password grant: username and
password from USERS_JSON) that issues RS256 JWT access tokens for AUDIENCE carrying the
person's claims (personnummer, pesel, cpr, names). POST /rotate makes a new signing key
(the JWKS then holds only the new key), to test key rotation at the resource server.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import uvicorn
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request, grants
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class PublicClient(ClientMixin):
    client_id = "portal"

    def get_client_id(self):
        return self.client_id

    def get_allowed_scope(self, scope):
        return scope or ""

    def check_endpoint_auth_method(self, method, endpoint):
        return method == "none"

    def check_grant_type(self, grant_type):
        return grant_type == "password"


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
    def __init__(self, uri, headers, form):
        super().__init__("POST", uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self):
        return self._form

    @property
    def args(self):
        return {}


class Provider(AuthorizationServer):
    def __init__(self, issuer: str, audience: str, users: dict):
        super().__init__()
        self.issuer = issuer
        self.audience = audience
        self.users = users
        self.key = self._new_key()
        self.register_grant(PasswordGrant)
        self.register_token_generator("default", self._token)

    @staticmethod
    def _new_key():
        return RSAKey.generate_key(2048, private=True, parameters={"kid": uuid.uuid4().hex[:12], "alg": "RS256", "use": "sig"})

    def query_client(self, client_id):
        return PublicClient() if client_id == "portal" else None

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
        token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        return {"token_type": "Bearer", "access_token": token, "expires_in": 600}


def make_app(port: int, audience: str, users: dict) -> Starlette:
    issuer = f"http://127.0.0.1:{port}"
    provider = Provider(issuer, audience, users)

    async def discovery(request: Request):
        return JSONResponse({"issuer": issuer, "jwks_uri": f"{issuer}/jwks", "token_endpoint": f"{issuer}/token",
                             "grant_types_supported": ["password"], "id_token_signing_alg_values_supported": ["RS256"]})

    async def jwks(request: Request):
        return JSONResponse({"keys": [provider.key.as_dict(private=False)]})

    async def token(request: Request):
        form = {k: str(v) for k, v in (await request.form()).items()}
        return provider.create_token_response(FormRequest(str(request.url), dict(request.headers), form))

    async def rotate(request: Request):
        provider.key = provider._new_key()
        return Response(provider.key.kid)

    return Starlette(routes=[
        Route("/.well-known/openid-configuration", discovery),
        Route("/jwks", jwks),
        Route("/token", token, methods=["POST"]),
        Route("/rotate", rotate, methods=["POST"]),
    ])


if __name__ == "__main__":
    port, audience, users_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(users_file) as fh:
        users = json.load(fh)
    uvicorn.run(make_app(port, audience, users), host="127.0.0.1", port=port, log_level="warning")
