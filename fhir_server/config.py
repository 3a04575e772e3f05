"""Settings, from the environment (prefix FHIR_SERVER_) or the command line."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from .storage.db import default_database_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIR_SERVER_", extra="ignore")

    database_url: str = ""  # empty: FHIR_SERVER_DATABASE_URL or the embedded SQLite file
    base_path: str = "/fhir"
    max_body_bytes: int = 50 * 1024 * 1024
    max_bundle_entries: int = 10_000
    default_page_size: int = 20
    unique_national_identity: bool = True  # two active Patients may not share a national id
    export_dir: str = "data/export"
    export_retention_hours: int = 24
    mllp_port: int = 0  # 0 = no MLLP listener
    mllp_host: str = "0.0.0.0"
    mllp_max_message_bytes: int = 1024 * 1024
    hl7_destinations: str = ""  # comma-separated host:port list for outbound SIU
    run_background_jobs: bool = True
    # Subscriptions (docs/subscriptions.md)
    subscription_allowed_hosts: str = ""  # comma-separated hosts whose http:// rest-hook endpoints are allowed
    subscription_allow_loopback_http: bool = True  # http:// to 127.0.0.0/8, ::1 and localhost (development, tests)
    subscription_max_failures: int = 5  # consecutive failed deliveries before status becomes error
    subscription_retry_base_seconds: float = 2.0  # back-off: base * 2**(failures-1), capped below
    subscription_retry_max_seconds: float = 300.0
    subscription_delivery_timeout_seconds: float = 10.0
    subscription_poll_seconds: float = 0.5

    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url()
