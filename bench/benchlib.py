"""Helpers the benchmark scripts share: ports, child process groups, throw-away databases."""

from __future__ import annotations

import os
import signal
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(popen: subprocess.Popen) -> None:
    """Stop a child started with start_new_session=True, and its own children
    (uvicorn's workers): SIGINT, then SIGKILL after 20 s."""
    if popen.poll() is not None:
        return
    try:
        os.killpg(popen.pid, signal.SIGINT)
        popen.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.wait()


def recreate_pg_database(pg_url: str) -> None:
    """DROP and CREATE the database a PostgreSQL URL names (connecting to `postgres`)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(pg_url)
    if not u.database:
        raise SystemExit("the PostgreSQL URL must name a database")
    conninfo = psycopg.conninfo.make_conninfo(host=u.host or "localhost", port=u.port or 5432,
                                              user=u.username or "postgres", password=u.password or None,
                                              dbname="postgres")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ident = '"' + u.database.replace('"', '""') + '"'
        conn.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {ident}")


def bearer_headers(settings, db, base: str = "http://testserver/fhir", scope: str = "system/*.*") -> dict[str, str]:
    """Authorization headers with a token of the server's own issuer, for an in-process app
    (`build_app(settings, db)`; TestClient's base is http://testserver). Protection is on in
    every benchmark, as in production."""
    from fhir_server.auth.tokens import cli_token

    return {"Authorization": f"Bearer {cli_token(settings, db, scope, ttl=86400, audience=base)}"}


def server_bearer_headers(db_url: str, base: str, env: dict[str, str] | None = None, scope: str = "system/*.*") -> dict[str, str]:
    """Authorization headers for a `fhir-server serve` child on `db_url` answering at `base`
    (http://127.0.0.1:PORT/fhir): the token comes from `fhir-server token`, the same issuer."""
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "token", "--scope", scope, "--ttl", "86400",
         "--audience", base, "--database-url", db_url],
        env=env or dict(os.environ), capture_output=True, text=True, check=True,
    )
    return {"Authorization": f"Bearer {out.stdout.strip()}"}


class AuditBacklog:
    """Waits until the access log holds a run's read events (they are written in batches up
    to 0.2 s later, docs/audit.md), so that their cost counts in the run that caused it
    and not in the next."""

    def __init__(self, db_url: str):
        from sqlalchemy import create_engine

        self.engine = create_engine(db_url)

    def logged(self) -> int:
        """AuditEvents in the log so far."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one()

    def wait(self, before: int, requests: int, limit: float = 300.0) -> float:
        """Seconds until `before + requests` AuditEvents are stored (at most `limit`)."""
        import time

        t0 = time.perf_counter()
        while self.logged() < before + requests and time.perf_counter() - t0 < limit:
            time.sleep(0.05)
        return time.perf_counter() - t0

    def dispose(self) -> None:
        self.engine.dispose()
