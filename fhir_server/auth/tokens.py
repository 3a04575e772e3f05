"""Access tokens of the built-in issuer: JWTs (RFC 9068 profile) carrying the SMART context.

Claims: iss (the issuer = the FHIR base), aud (the FHIR base), sub, client_id, scope
(space-separated), iat, nbf, exp, jti, and where there is one the SMART launch context
`patient` (a Patient id) and `fhirUser` (a relative reference).
"""

from __future__ import annotations

import time
import uuid

from joserfc import jwt

DEFAULT_BASE = "http://127.0.0.1:8080/fhir"


def issue_access_token(
    signing_key,
    issuer: str,
    audience: str | list[str],
    scope: str,
    subject: str,
    client_id: str,
    ttl: int,
    patient: str | None = None,
    fhir_user: str | None = None,
    extra: dict | None = None,
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "client_id": client_id,
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    if patient:
        claims["patient"] = patient
    if fhir_user:
        claims["fhirUser"] = fhir_user
    if extra:
        claims.update(extra)
    header = {"alg": signing_key.alg, "kid": signing_key.kid, "typ": "at+jwt"}
    return jwt.encode(header, claims, signing_key)


def cli_token(settings, db, scope: str, patient: str | None = None, fhir_user: str | None = None, ttl: int | None = None, audience: str | None = None, subject: str = "cli") -> str:
    """A token from the built-in issuer for scripts and tests (`fhir-server token`)."""
    from .keys import ensure_key, load_pem, read_keys

    if settings.auth_signing_key_file:  # the configured PEM signs; no database needed
        key = load_pem(settings.auth_signing_key_file)
    else:
        ensure_key(db.engine, settings)
        key = read_keys(db.engine, settings).current
    base = audience or settings.auth_base_url or getattr(settings, "public_base_url", "") or DEFAULT_BASE
    return issue_access_token(key, base.rstrip("/"), base.rstrip("/"), scope, subject, "fhir-server-cli", ttl or settings.auth_token_ttl, patient, fhir_user)
