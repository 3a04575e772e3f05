"""Settings, from the environment (prefix FHIR_SERVER_) or the command line."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from .storage.db import default_database_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIR_SERVER_", extra="ignore")

    database_url: str = ""  # empty: FHIR_SERVER_DATABASE_URL or the embedded SQLite file
    base_path: str = "/fhir"
    base_url_aliases: str = ""  # comma-separated absolute bases that also mean this server (references)
    max_body_bytes: int = 50 * 1024 * 1024
    max_bundle_entries: int = 10_000
    default_page_size: int = 20
    unique_national_identity: bool = True  # two active Patients may not share a national id
    export_dir: str = "data/export"
    export_retention_hours: int = 24
    mllp_port: int = 0  # 0 = no MLLP listener
    mllp_host: str = "127.0.0.1"  # `serve` sets it to --host unless FHIR_SERVER_MLLP_HOST / --mllp-host say otherwise
    mllp_max_message_bytes: int = 1024 * 1024
    hl7_destinations: str = ""  # comma-separated host:port list for outbound SIU
    run_background_jobs: bool = True
    # reliability and operation (docs/operations.md)
    public_base_url: str = ""  # e.g. https://fhir.example.org/fhir; when set, always the base in links
    trusted_proxies: str = "127.0.0.1,::1"  # addresses/networks whose X-Forwarded-* headers are believed
    access_log: str = "text"  # off | text | json (one line per request)
    max_resource_bytes: int = 8 * 1024 * 1024  # one resource on write (413 beyond)
    max_response_bytes: int = 64 * 1024 * 1024  # one batch/transaction/search response (413 beyond)
    http_header_timeout: float = 10.0  # seconds for a request head to arrive
    http_body_timeout: float = 60.0  # seconds for a request body to arrive after its head
    limit_concurrency: int = 1000  # connections + requests in flight per worker (503 beyond)
    # Security (issue 12; docs/security.md). Protection is on unless auth=off.
    auth: str = "on"  # on | off (off: every request is allowed; for local experiments only)
    auth_base_url: str = ""  # the FHIR base as clients reach it: tokens' `aud`, the built-in issuer's `iss`; empty: from each request
    auth_signing_key_file: str = ""  # PEM private key (RSA or EC P-256) of the built-in issuer; empty: keys in the database
    auth_token_ttl: int = 3600  # seconds an access token from the built-in issuer lives
    auth_refresh_ttl: int = 30 * 24 * 3600  # seconds a refresh token lives (rotated at each use)
    auth_clock_skew: int = 60  # seconds of leeway on exp/nbf/iat
    auth_issuers_file: str = ""  # JSON list of trusted external OpenID Providers (issuer, audience, claim mapping)
    auth_clients_file: str = ""  # JSON list of OAuth clients registered by configuration
    auth_jwks_refetch_seconds: int = 30  # at most one JWKS re-fetch per issuer in this many seconds (unknown kid)
    auth_unknown_person: str = "refuse"  # refuse | create: an eID login of a person with no Patient
    dev_login: bool = False  # development-only test login page at the authorize endpoint
    cors_origins: str = ""  # comma-separated browser origins allowed (CORS); empty: none
    rate_limit: str = ""  # per-client limit in `limits` notation, e.g. "600/minute"; empty: off

    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url()
