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
    )


@pytest.fixture(scope="session")
def app(settings):
    from fhir_server.bootstrap import build_app

    return build_app(settings)


@pytest.fixture(scope="session")
def auth_headers() -> dict[str, str]:
    """Headers that let a test request act as a backend system client with full access
    (`system/*.*`). Tests that build their own HTTP clients (live server, fhirpy, httpx)
    send these. Empty until the server requires tokens; the security work fills it."""
    return {}


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

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
