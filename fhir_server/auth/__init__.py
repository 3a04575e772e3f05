"""SMART on FHIR protection: the resource server (bearer tokens) and the built-in
authorization server (discovery, JWKS, authorize, token, introspection, revocation).

Plugged in through fhir_server.plugins: `on_database` makes the first signing key,
`attach` adds the bearer-token layer, CORS, the discovery and OAuth routes.
See docs/security.md.
"""

from __future__ import annotations

import logging

from fastapi import Request

log = logging.getLogger("fhir_server.auth")


def on_database(db, settings) -> None:
    from .keys import ensure_key

    ensure_key(db.engine, settings)


def check_settings(settings) -> None:
    """ValueError for a security setting with a value it cannot have: a typo must stop the
    start (FHIR_SERVER_AUTH=false would otherwise leave protection on, silently)."""
    if settings.auth.strip().lower() not in ("on", "off"):
        raise ValueError(f"FHIR_SERVER_AUTH must be on or off, not {settings.auth!r}")
    if settings.auth_unknown_person not in ("refuse", "create"):
        raise ValueError(f"FHIR_SERVER_AUTH_UNKNOWN_PERSON must be refuse or create, not {settings.auth_unknown_person!r}")


def protect(app, db, settings) -> None:
    """The resource server's layer, part of every app `create_app` builds: bearer-token
    verification (and CORS when origins are configured) in front of the routes."""
    from . import discovery
    from .keys import KeyCache
    from .middleware import BearerAuth
    from .ratelimit import make_limiter
    from .verify import TokenVerifier, load_issuers

    check_settings(settings)
    keys = KeyCache(db.engine, settings, min_interval=min(5.0, float(settings.auth_jwks_refetch_seconds)))
    verifier = TokenVerifier(settings, keys, db, load_issuers(settings.auth_issuers_file))
    app.state.auth_keys = keys
    app.state.auth_verifier = verifier
    app.state.capability_security = lambda base_url: discovery.capability_security(settings, base_url)
    from ..security.acting import ActingFor

    app.add_middleware(ActingFor, db=db)  # inside BearerAuth: whom the request acts for (guardians, Consent proxies)
    app.add_middleware(BearerAuth, settings=settings, verifier=verifier, base_path=settings.base_path.rstrip("/"), rate_limiter=make_limiter(settings))
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept", "Prefer", "If-Match", "If-None-Match", "If-None-Exist", "If-Modified-Since", "X-Request-Id", "X-Acting-For"],
            expose_headers=["Location", "Content-Location", "ETag", "Last-Modified", "X-Request-Id", "X-Progress", "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )
    if settings.auth.strip().lower() == "off":
        log.warning("FHIR_SERVER_AUTH=off: protection is OFF, every request is allowed without a token. Never run like this with real data.")


def attach(app, db, settings) -> None:
    """The discovery documents, the JWKS and the authorization server's routes."""
    from fastapi.responses import JSONResponse

    from . import discovery
    from .middleware import request_base_url

    base = settings.base_path.rstrip("/")
    keys = app.state.auth_keys
    verifier = app.state.auth_verifier

    def base_url(request: Request) -> str:
        return request_base_url(request.scope, base)

    json_headers = {"Cache-Control": "no-store"}
    first_new_route = len(app.router.routes)

    @app.get(base + "/.well-known/smart-configuration", include_in_schema=False)
    async def smart_configuration(request: Request):
        return JSONResponse(discovery.smart_configuration(settings, base_url(request)))

    @app.get(base + "/.well-known/openid-configuration", include_in_schema=False)
    async def openid_configuration(request: Request):
        return JSONResponse(discovery.openid_configuration(settings, base_url(request)))

    @app.get("/auth/jwks", include_in_schema=False)
    async def jwks():
        return JSONResponse(keys.public_jwks(), headers=json_headers)

    # [base]/.well-known/... must win over the generic [base]/{type}/{id} route
    new = app.router.routes[first_new_route:]
    del app.router.routes[first_new_route:]
    app.router.routes[0:0] = new

    from .oauth import attach_oauth

    attach_oauth(app, db, settings, keys, verifier)
