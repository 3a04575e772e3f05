"""Settings, from the environment (prefix FHIR_SERVER_) or the command line."""

from __future__ import annotations

from typing import Literal

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
    # the access log (docs/audit.md): IHE BALP AuditEvents for every API access
    audit: str = "on"  # on | off (off: no AuditEvents; for experiments only)
    audit_flush_seconds: float = 0.2  # read events are written in batches at most this far apart
    audit_writer: str = "auto"  # auto | process | thread: where read events are written to the log (auto: process)
    audit_retention_days: int = 0  # delete AuditEvents older than this (0: keep them all)
    # FastAPI's own OpenTelemetry spans and metrics. Off: request paths and queries carry patient ids,
    # which must not reach a tracing backend unasked; and the per-request check of the global
    # providers cost 3-4% of a read's CPU even with none configured
    telemetry: bool = False
    max_resource_bytes: int = 8 * 1024 * 1024  # one resource on write (413 beyond)
    max_response_bytes: int = 64 * 1024 * 1024  # one batch/transaction/search response (413 beyond)
    # PostgreSQL: a search statement on the event-loop reader running longer is cancelled (503 `timeout`)
    search_timeout_seconds: float = 30.0
    http_header_timeout: float = 10.0  # seconds for a request head to arrive
    http_body_timeout: float = 60.0  # seconds for a request body to arrive after its head
    limit_concurrency: int = 1000  # connections + requests in flight per worker (503 beyond)
    terminology_load: bool = True  # load terminology/ (R4 CodeSystems, ValueSets, ConceptMaps) at start-up
    required_profiles: str = ""  # "Type=profile-url,...": writes of Type must conform (422 otherwise)

    # A QuestionnaireResponse whose Questionnaire this server does not hold: warn | refuse
    unknown_questionnaire: Literal["warn", "refuse"] = "warn"
    # Types recorded in the commit-ordered change feed that [base]/$changes serves
    change_feed_types: str = "QuestionnaireResponse,Observation,Communication"

    # Subscriptions (docs/subscriptions.md)
    subscription_allowed_hosts: str = ""  # comma-separated hosts whose http:// rest-hook endpoints are allowed
    subscription_allow_loopback_http: bool = True  # http:// to 127.0.0.0/8, ::1 and localhost (development, tests)
    subscription_max_failures: int = 5  # consecutive failed deliveries before status becomes error
    subscription_retry_base_seconds: float = 2.0  # back-off: base * 2**(failures-1), capped below
    subscription_retry_max_seconds: float = 300.0
    subscription_delivery_timeout_seconds: float = 10.0
    subscription_poll_seconds: float = 0.5
    subscription_secret_keys: str = ""  # comma-separated Fernet keys sealing channel.header secrets; empty: a key kept in the database
    # Binary content (docs/documents.md): filesystem under blob_dir, or an S3-compatible store
    blob_store: str = "filesystem"  # filesystem | s3
    blob_dir: str = "data/blobs"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""  # empty: AWS; else e.g. http://minio:9000
    s3_region: str = ""
    s3_access_key_id: str = ""  # empty: boto3's usual credential chain
    s3_secret_access_key: str = ""
    s3_create_bucket: bool = False
    upload_rules: str = ""  # YAML file; empty: mappings/documents/upload-rules.yaml
    clamd_address: str = ""  # unix:/path/clamd.ctl or host:port; empty: no virus scan
    blob_orphan_grace_seconds: int = 3600  # a blob no Binary version names is removed once this old
    blob_sweep_interval_seconds: int = 86400  # how often the orphan-blob sweep job is queued (0: never)

    # Booking (docs/booking.md)
    booking_hold_minutes: int = 10  # how long Appointment/$hold reserves a Slot
    booking_timezone: str = "Europe/Stockholm"  # default local time zone (a Location may say otherwise)
    booking_rules_file: str = ""  # empty: mappings/booking/rules.yaml
    # Notifications (docs/notifications.md)
    notify_default_language: str = "en"
    notify_reminder_hour: int = 18  # local hour, the day before the appointment
    notify_templates_dir: str = ""  # empty: terminology/templates/notify
    notify_smtp_host: str = ""  # empty: no e-mail channel
    notify_smtp_port: int = 25
    notify_smtp_username: str = ""
    notify_smtp_password: str = ""
    notify_smtp_starttls: bool = False
    notify_smtp_from: str = "no-reply@localhost"
    notify_smtp_timeout: float = 30.0
    notify_sms_url: str = ""  # empty: no SMS channel
    notify_sms_username: str = ""
    notify_sms_password: str = ""
    notify_sms_token: str = ""  # sent as `Authorization: Bearer ...` when set
    # $to, $text, $text_json (the text as a JSON string) and $key (idempotency key) are filled in
    notify_sms_body: str = '{"to": "$to", "message": $text_json, "reference": "$key"}'
    notify_sms_message_id_field: str = "id"  # where the gateway's JSON reply carries its message id
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
    auth_revocation_check_seconds: float = 5.0  # a cached built-in token re-asks the revocation list after this many seconds (every process)
    auth_unknown_person: str = "refuse"  # refuse | create: an eID login of a person with no Patient
    dev_login: bool = False  # development-only test login page at the authorize endpoint
    cors_origins: str = ""  # comma-separated browser origins allowed (CORS); empty: none
    rate_limit: str = ""  # per-client limit in `limits` notation, e.g. "600/minute"; empty: off

    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url()
