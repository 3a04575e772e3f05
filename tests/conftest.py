"""Shared fixtures: one database per test session (SQLite by default, PostgreSQL
when FHIR_SERVER_DATABASE_URL points at one), the app, an HTTP client, and a
live server for the real-client tests."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Apps that tests build for themselves skip loading the ~2,400 shipped terminology resources
# (seconds per fresh database); the session app (`settings` below) loads them.
os.environ.setdefault("FHIR_SERVER_TERMINOLOGY_LOAD", "false")

# Every app the tests build (the session app, apps built by single tests, servers
# started as subprocesses) signs and verifies with one test key and expects tokens
# for one audience, so that `auth_headers` works against all of them.
TEST_AUDIENCE = "http://testserver/fhir"


def _test_signing_key() -> str:
    import atexit
    import tempfile

    from joserfc.jwk import RSAKey

    fd, path = tempfile.mkstemp(prefix="fhir-test-key-", suffix=".pem")
    with os.fdopen(fd, "wb") as fh:
        fh.write(RSAKey.generate_key(2048, private=True).as_pem(private=True))
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    return path


os.environ.setdefault("FHIR_SERVER_AUTH_SIGNING_KEY_FILE", _test_signing_key())
os.environ.setdefault("FHIR_SERVER_AUTH_BASE_URL", TEST_AUDIENCE)


def shared_data(*parts: str) -> Path:
    """A path in ../shared/data; skips the test when the data set is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data set not present: {path}")
    return path


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = os.environ.get("FHIR_SERVER_DATABASE_URL")
    if url and url.startswith("postgresql"):
        _reset_postgres(url)
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'fhir.sqlite'}"


@pytest.fixture(scope="session")
def settings(database_url, tmp_path_factory):
    from fhir_server.config import Settings

    return Settings(
        database_url=database_url,
        export_dir=str(tmp_path_factory.mktemp("export")),
        blob_dir=str(tmp_path_factory.mktemp("blobs")),
        run_background_jobs=False,
        terminology_load=True,
        # the access log's writer as a thread: the many apps of the suite need no child process
        # each; tests/audit/test_process_writer.py runs the default (a writer process)
        audit_writer="thread",
    )


@pytest.fixture(scope="session")
def app(settings):
    from fhir_server.bootstrap import build_app

    return build_app(settings)


def make_token(scope: str = "system/*.*", patient: str | None = None, fhir_user: str | None = None, ttl: int = 3600,
               audience: str | None = None, client_id: str = "test-client", subject: str = "test", extra: dict | None = None) -> str:
    """A token of the built-in issuer signed with the test key (see issue_token)."""
    from fhir_server.auth.keys import load_pem
    from fhir_server.auth.tokens import issue_access_token

    key = load_pem(os.environ["FHIR_SERVER_AUTH_SIGNING_KEY_FILE"])
    aud = audience or os.environ["FHIR_SERVER_AUTH_BASE_URL"]
    if patient and not fhir_user:
        fhir_user = f"Patient/{patient}"
    return issue_access_token(key, aud, aud, scope, subject, client_id, ttl, patient, fhir_user, extra)


@pytest.fixture(scope="session")
def issue_token():
    """issue_token(scope="system/*.*", patient=None, fhir_user=None, ttl=3600, ...) -> a
    bearer token from the server's own issuer; headers: {"Authorization": f"Bearer {tok}"}."""
    return make_token


@pytest.fixture(scope="session")
def auth_headers() -> dict[str, str]:
    """Headers that let a test request act as a backend system client with full access
    (`system/*.*`). Tests that build their own HTTP clients (live server, fhirpy, httpx)
    send these; the `client` fixture sends them by default."""
    return {"Authorization": f"Bearer {make_token('system/*.*')}"}


def _use_session_settings(settings) -> None:
    """Point the modules that keep the running server's settings in a process global back at
    the session's: a test that built an app of its own (with a settings copy) replaced them,
    and a later test that changes `settings` (monkeypatch) must reach the session app."""
    from fhir_server.documents import settings as documents_settings
    from fhir_server.notify import requests as notify_requests
    from fhir_server.storage import blobs
    from fhir_server.subscriptions import registry
    from fhir_server.workflows.booking import integrity, lifecycle

    for module in (notify_requests, integrity, lifecycle, registry):
        module.configure(settings)
    documents_settings.use(settings)
    if getattr(blobs.current(), "root", None) != Path(settings.blob_dir):
        blobs.configure(settings)  # the blob store too (a test's own app, or a default one, replaced it)


@pytest.fixture
def client(app, auth_headers, settings):
    """A test client acting as a backend system with full access (system/*.*)."""
    from fastapi.testclient import TestClient

    _use_session_settings(settings)
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as c:
        yield c


@pytest.fixture
def anonymous_client(app, settings):
    """A test client that sends no token."""
    from fastapi.testclient import TestClient

    _use_session_settings(settings)
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.fixture(scope="session")
def live_server(app):
    """The app served by uvicorn on a free loopback port, for real clients."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("live server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    thread.join(timeout=10)
