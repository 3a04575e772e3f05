"""HTTP routes of the built-in authorization server: /auth/authorize, /auth/token,
/auth/introspect, /auth/revoke (the JWKS and discovery are in fhir_server.auth).

The authorize step logs the person in through the configured external OpenID Provider
(`login.py`; the production path) or, for development only and when
`FHIR_SERVER_DEV_LOGIN=true`, through a clearly labelled test page where one picks a
national identity (`devlogin.py`). With neither configured, authorize explains that no
login method is available.
"""

from __future__ import annotations

import json

from authlib.oauth2.rfc6749.errors import InsecureTransportError
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from . import discovery
from .middleware import request_base_url
from .server import FormRequest, SmartAuthorizationServer

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _insecure_transport(request: Request, exc: InsecureTransportError) -> Response:
    """Plain http to a host that is not loopback: an OAuth error (400), RFC 6749 section 3.1."""
    return JSONResponse(dict(exc.get_body()), status_code=exc.status_code, headers=NO_STORE)


def attach_oauth(app, db, settings, keys, verifier) -> None:
    server = SmartAuthorizationServer(db, settings, keys, verifier)
    app.state.auth_server = server
    app.add_exception_handler(InsecureTransportError, _insecure_transport)
    base = settings.base_path.rstrip("/")

    def endpoints(request: Request) -> dict:
        return discovery.endpoints(settings, request_base_url(request.scope, base))

    async def oauth_request(request: Request) -> FormRequest:
        form = {}
        if request.method == "POST":
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == "application/x-www-form-urlencoded":
                form = {k: str(v) for k, v in (await request.form()).items()}
        args = dict(request.query_params)
        return FormRequest(request.method, str(request.url), request.headers, form, args)

    def run(fn, endpoints_: dict, *args):
        def call():
            server.bind(endpoints_)
            return fn(*args)

        return run_in_threadpool(call)

    def respond(result) -> Response:
        status, body, headers = result
        headers = dict(headers or [])
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if status in (301, 302, 303, 307) and "Location" in headers:
            return RedirectResponse(headers["Location"], status_code=302, headers={k: v for k, v in headers.items() if k != "Location"})
        headers.update(NO_STORE)
        headers.pop("Content-Type", None)
        return Response(content=body or "", status_code=status, headers=headers, media_type="application/json")

    @app.post("/auth/token", include_in_schema=False)
    async def token(request: Request):
        req = await oauth_request(request)
        return respond(await run(server.create_token_response, endpoints(request), req))

    @app.post("/auth/introspect", include_in_schema=False)
    async def introspect(request: Request):
        req = await oauth_request(request)
        return respond(await run(server.create_endpoint_response, endpoints(request), "introspection", req))

    @app.post("/auth/revoke", include_in_schema=False)
    async def revoke(request: Request):
        req = await oauth_request(request)
        return respond(await run(server.create_endpoint_response, endpoints(request), "revocation", req))

    @app.get("/auth/authorize", include_in_schema=False)
    async def authorize_get(request: Request):
        from authlib.oauth2 import OAuth2Error

        req = await oauth_request(request)
        ep = endpoints(request)
        try:
            await run(server.get_consent_grant, ep, req)
        except OAuth2Error as exc:
            return _authorize_error(server, ep, req, exc)
        login = getattr(app.state, "auth_login", None)
        if login is not None:
            return await login.start(request, dict(request.query_params))
        if settings.dev_login:
            from .devlogin import login_page

            return HTMLResponse(login_page(dict(request.query_params)), headers=NO_STORE)
        return HTMLResponse("<h1>No login method</h1><p>No trusted OpenID Provider in FHIR_SERVER_AUTH_ISSUERS_FILE has a "
                            "login_client_id, and the development login is off.</p>", status_code=503)

    @app.post("/auth/authorize", include_in_schema=False)
    async def authorize_post(request: Request):
        """The development login form: the chosen national identity, and the original authorize parameters."""
        if not settings.dev_login:
            return HTMLResponse("<h1>Development login is off</h1>", status_code=403)
        from .devlogin import user_from_form

        form = {k: str(v) for k, v in (await request.form()).items()}
        ep = endpoints(request)
        params = {k: v for k, v in form.items() if not k.startswith("login_")}
        req = FormRequest("GET", str(request.url.replace(query=None)), request.headers, {}, params)
        try:
            user = await run_in_threadpool(user_from_form, db, settings, form)
        except ValueError as exc:
            from .devlogin import login_page

            return HTMLResponse(login_page(params, error=str(exc)), status_code=400, headers=NO_STORE)
        return await complete_authorization(ep, req, user)

    async def complete_authorization(ep: dict, req: FormRequest, user):
        """Issue the code for `user` and redirect back to the client (shared with the external login)."""
        from authlib.oauth2 import OAuth2Error

        try:
            grant = await run(server.get_consent_grant, ep, req)
            return respond(await run(server.create_authorization_response, ep, req, user, grant))
        except OAuth2Error as exc:
            return _authorize_error(server, ep, req, exc)

    app.state.auth_complete_authorization = complete_authorization
    from .login import attach_login

    attach_login(app, db, settings, verifier, server.store, complete_authorization)


def _authorize_error(server, ep, req, exc) -> Response:
    """An invalid client or redirect URI is shown to the user (never redirected to);
    other errors go back to the client's redirect URI, as RFC 6749 §4.1.2.1 says."""
    status, body, headers = server.handle_error_response(req, exc)
    headers = dict(headers or [])
    if "Location" in headers:
        return RedirectResponse(headers["Location"], status_code=302)
    return JSONResponse(body if isinstance(body, dict) else json.loads(body or "{}"), status_code=status, headers=NO_STORE)
