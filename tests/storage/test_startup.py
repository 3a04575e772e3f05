"""Start-up (migrations, seeding) with several processes starting at once, as
`serve --workers N` does on a fresh database; and a clear line when the
database cannot be reached."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from tests.isolated_db import isolated_database_url

PROCESSES = 4


def _start(url: str, export_dir: str, barrier) -> str:
    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings

    barrier.wait()
    try:
        app = build_app(Settings(database_url=url, export_dir=export_dir, run_background_jobs=False))
        app.state.db.dispose()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return f"{type(exc).__name__}: {exc}"


def _race(url: str, export_dir: str) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with ctx.Pool(PROCESSES) as pool:
            return pool.starmap(_start, [(url, export_dir, barrier)] * PROCESSES)


@pytest.fixture
def fresh_database_url(database_url, tmp_path):
    """A database nobody has migrated: a new SQLite file, or a new PostgreSQL schema
    (a schema, not a database: the test needs no CREATEDB right)."""
    with isolated_database_url(database_url, tmp_path / "fresh.sqlite", "startup") as url:
        yield url


def test_many_processes_start_at_once_on_a_fresh_database(fresh_database_url, tmp_path):
    from fhir_server.identifiers import naming_systems

    results = _race(fresh_database_url, str(tmp_path / "export"))
    assert results == ["ok"] * PROCESSES
    engine = create_engine(fresh_database_url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM resources WHERE res_type = 'NamingSystem'")).scalar_one()
        versions = conn.execute(text("SELECT count(*) FROM resource_versions WHERE res_type = 'NamingSystem'")).scalar_one()
    engine.dispose()
    assert n == len(naming_systems()) == versions  # seeded once, by one process


def test_unreachable_database_is_one_clear_line():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"postgresql+psycopg://fhir:secret@127.0.0.1:{port}/fhir"
    proc = subprocess.run([sys.executable, "-m", "fhir_server.cli", "migrate", "--database-url", url],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "secret" not in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
