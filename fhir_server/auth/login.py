"""The authorize step's login through an external OpenID Provider (the production path).

The eID broker (in front of BankID, Freja, MitID, Profil Zaufany) is the trusted issuer in
`auth_issuers_file` that has a `login_client_id` (and optionally `login_client_secret`).
When a SMART app's authorization request is valid, the person is sent to the broker
(OpenID Connect authorization code flow with PKCE S256, `state`, `nonce`); the broker
returns to `/auth/callback`, the server redeems the code, verifies the ID token (signature
from the broker's JWKS, `iss`, `aud` = our client id, `exp`, `nonce`), resolves the
national identity claim to the Patient (or Practitioner) exactly as for the broker's access
tokens, and completes the app's authorization (code back to the app's redirect URI).

The pending authorization request is kept in `auth_grants` (kind `login`, 10 minutes, used
once), so several server processes can share the flow.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from urllib.parse import urlencode

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from joserfc import jwt
from joserfc.errors import JoseError
from starlette.concurrency import run_in_threadpool

from ..errors import FhirError
from .grants import GrantStore, User
from .verify import ExternalIssuer, TokenVerifier

LOGIN_TTL = 600


class ExternalLogin:
    def __init__(self, issuer: ExternalIssuer, verifier: TokenVerifier, store: GrantStore, settings, db):
        self.issuer = issuer
        self.verifier = verifier
        self.store = store
        self.settings = settings
        self.db = db
        self._conf: dict | None = None

    def _discovery(self) -> dict:
        if self._conf is None:
            r = httpx.get(self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10)
            r.raise_for_status()
            self._conf = r.json()
        return self._conf

    @staticmethod
    def callback_url(request: Request) -> str:
        from .middleware import request_base_url

        base = request_base_url(request.scope, "")
        return base.rstrip("/") + "/auth/callback"

    async def start(self, request: Request, params: dict):
        """Send the person to the broker; remember the app's request under a fresh state."""
        state = secrets.token_urlsafe(24)
        nonce = secrets.token_urlsafe(16)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        data = {"params": params, "nonce": nonce, "verifier": verifier, "redirect_uri": self.callback_url(request)}
        try:
            conf = await run_in_threadpool(self._discovery)
        except (httpx.HTTPError, ValueError):
            return HTMLResponse("<h1>Login unavailable</h1><p>The identity provider cannot be reached; try again later.</p>", status_code=503)
        await run_in_threadpool(self.store.put, "login", state, params.get("client_id", ""), data, LOGIN_TTL)
        query = {
            "response_type": "code",
            "client_id": self.issuer.login_client_id,
            "redirect_uri": data["redirect_uri"],
            "scope": "openid",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return RedirectResponse(conf["authorization_endpoint"] + "?" + urlencode(query), status_code=302)

    def finish(self, state: str, code: str) -> tuple[dict, User]:
        """Redeem the broker's code; the app's original parameters and the logged-in User.
        ValueError with a reason the person may see."""
        grant = self.store.get("login", state)
        if grant is None or grant.expired or not self.store.use("login", state):
            raise ValueError("This login has expired or was already used; start again from the app")
        data = grant.data
        conf = self._discovery()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": data["redirect_uri"],
                "client_id": self.issuer.login_client_id, "code_verifier": data["verifier"]}
        if self.issuer.login_client_secret:
            form["client_secret"] = self.issuer.login_client_secret
        try:
            r = httpx.post(conf["token_endpoint"], data=form, timeout=15)
        except httpx.HTTPError:
            raise ValueError("The identity provider cannot be reached") from None
        if r.status_code != 200:
            raise ValueError("The identity provider refused the login")
        id_token = r.json().get("id_token")
        if not isinstance(id_token, str):
            raise ValueError("The identity provider sent no ID token")
        claims = self._verify_id_token(id_token, data["nonce"])
        principal = self.verifier._external_principal(self.issuer, claims)
        user = User(subject=f"{self.issuer.issuer}|{claims.get('sub')}", patient=principal.patient, fhir_user=principal.fhir_user)
        return data["params"], user

    def _verify_id_token(self, token: str, nonce: str) -> dict:
        from joserfc import jws

        try:
            header = jws.extract_compact(token.encode("ascii")).protected
            key = self.verifier._external_key(self.issuer, header.get("kid"))
            if key is None or header.get("alg") not in ("RS256", "ES256", "RS384", "ES384"):
                raise ValueError("the ID token is not signed by the identity provider")
            claims = jwt.decode(token, key, algorithms=[header["alg"]]).claims
            jwt.JWTClaimsRegistry(
                leeway=self.settings.auth_clock_skew,
                iss={"essential": True, "value": self.issuer.issuer},
                aud={"essential": True, "value": self.issuer.login_client_id},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(claims)
        except (JoseError, UnicodeError, TypeError) as exc:
            raise ValueError(f"the ID token is not valid ({type(exc).__name__})") from None
        if isinstance(claims.get("iat"), (int, float)) and claims["iat"] > time.time() + self.settings.auth_clock_skew:
            raise ValueError("the ID token is issued in the future")
        return claims


def attach_login(app, db, settings, verifier, store, complete_authorization) -> None:
    """Use the first trusted issuer with a `login_client_id` for the authorize step."""
    issuer = next((i for i in verifier.issuers.values() if i.login_client_id), None)
    if issuer is None:
        return
    login = ExternalLogin(issuer, verifier, store, settings, db)
    app.state.auth_login = login

    @app.get("/auth/callback", include_in_schema=False)
    async def callback(request: Request):
        from .discovery import endpoints
        from .middleware import request_base_url
        from .server import FormRequest

        q = request.query_params
        if q.get("error") or not q.get("code") or not q.get("state"):
            return HTMLResponse(f"<h1>Login failed</h1><p>{_safe(q.get('error_description') or q.get('error') or 'no code')}</p>", status_code=400)
        try:
            params, user = await run_in_threadpool(login.finish, q["state"], q["code"])
        except ValueError as exc:
            return HTMLResponse(f"<h1>Login failed</h1><p>{_safe(str(exc))}</p>", status_code=400)
        except Exception as exc:  # the verifier's refusals (unknown person, bad claims) in the person's words
            from .verify import IdentityRefused, InvalidToken

            if isinstance(exc, IdentityRefused):
                return HTMLResponse(f"<h1>Login refused</h1><p>{_safe(exc.error.issues[0].diagnostics)}</p>", status_code=403)
            if isinstance(exc, (InvalidToken, FhirError)):
                return HTMLResponse(f"<h1>Login failed</h1><p>{_safe(str(exc))}</p>", status_code=400)
            raise
        ep = endpoints(settings, request_base_url(request.scope, settings.base_path.rstrip("/")))
        req = FormRequest("GET", str(request.url.replace(query=None)), request.headers, {}, params)
        return await complete_authorization(ep, req, user)


def _safe(text: str) -> str:
    from html import escape

    return escape(text)[:500]
