"""Discovery documents: SMART configuration (SMART App Launch 2.0 §2.0.6
"Conformance"), OpenID Provider metadata (OpenID Connect Discovery 1.0), the JWKS, and
the CapabilityStatement's rest.security (SMART-on-FHIR service, OAuth URIs extension).

The built-in issuer's identifier is the FHIR base (`auth_base_url`, else the base URL of
the request); its endpoints live under `/auth` on the same origin.
"""

from __future__ import annotations

import orjson

from ..security.scopes import NON_CLINICAL_SCOPES

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
CAPABILITIES = [
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-standalone-patient",
    "sso-openid-connect",  # id_token (openid fhirUser) with nonce, signed by the JWKS key; /.well-known/openid-configuration
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
]
SCOPES_SUPPORTED = sorted(NON_CLINICAL_SCOPES) + ["patient/*.rs", "patient/*.cruds", "user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds",
                                                   "patient/*.read", "patient/*.write", "user/*.read", "user/*.write", "system/*.read", "system/*.write", "system/*.*"]


def issuer_of(settings, base_url: str) -> str:
    return (settings.auth_base_url or base_url).rstrip("/")


def endpoints(settings, base_url: str) -> dict[str, str]:
    issuer = issuer_of(settings, base_url)
    origin = issuer[: len(issuer) - len(settings.base_path.rstrip("/"))] if issuer.endswith(settings.base_path.rstrip("/")) else issuer
    auth = origin.rstrip("/") + "/auth"
    return {
        "issuer": issuer,
        "jwks_uri": f"{auth}/jwks",
        "authorization_endpoint": f"{auth}/authorize",
        "token_endpoint": f"{auth}/token",
        "introspection_endpoint": f"{auth}/introspect",
        "revocation_endpoint": f"{auth}/revoke",
    }


def smart_configuration(settings, base_url: str) -> dict:
    doc = endpoints(settings, base_url)
    doc.update(
        {
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "response_types_supported": ["code"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": SCOPES_SUPPORTED,
            "capabilities": CAPABILITIES,
            "code_challenge_methods_supported": ["S256"],
        }
    )
    return doc


def openid_configuration(settings, base_url: str) -> dict:
    doc = smart_configuration(settings, base_url)
    doc.update(
        {
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "claims_supported": ["sub", "fhirUser", "patient", "iss", "aud", "exp", "iat"],
        }
    )
    return doc


def capability_security(settings, base_url: str) -> bytes:
    """CapabilityStatement.rest.security (JSON bytes) for this server's settings."""
    if settings.auth.strip().lower() == "off":
        return orjson.dumps(
            {
                "cors": bool(settings.cors_origins.strip()),
                "description": "WARNING: protection is OFF (FHIR_SERVER_AUTH=off): every request is allowed without a token. For local experiments only.",
            }
        )
    ep = endpoints(settings, base_url)
    ext = [{"url": name, "valueUri": ep[key]} for name, key in (("token", "token_endpoint"), ("authorize", "authorization_endpoint"),
                                                                 ("introspect", "introspection_endpoint"), ("revoke", "revocation_endpoint"))]
    return orjson.dumps(
        {
            "extension": [{"url": OAUTH_URIS, "extension": ext}],
            "cors": bool(settings.cors_origins.strip()),
            "service": [
                {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
                    "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
                }
            ],
            "description": "Every request needs a bearer token (SMART App Launch 2.0 scopes). Discovery: [base]/.well-known/smart-configuration",
        }
    )
