"""`fhir-server serve` as a new user starts it: protection on, and the one line it prints
says how to get a token - running that command gives a token the server accepts.
With FHIR_SERVER_AUTH=off it warns at start-up (and the CapabilityStatement says so)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra) -> dict:
    """The environment of a user's shell: no test key, no fixed audience; a fresh database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_SERVER_")}
    env.update(FHIR_SERVER_DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite'}", FHIR_SERVER_TERMINOLOGY_LOAD="false",
               FHIR_SERVER_EXPORT_DIR=str(tmp_path / "export"), FHIR_SERVER_BLOB_DIR=str(tmp_path / "blobs"),
               PYTHONPATH=str(ROOT), **extra)
    return env


class Served:
    def __init__(self, env: dict, port: int, log: Path):
        self.log = log
        self.out = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                     env=env, cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        self.base = f"http://127.0.0.1:{port}"

    def wait_ready(self) -> str:
        deadline = time.time() + 90
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return self.log.read_text()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not start:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.out.close()


def test_serve_prints_how_to_get_a_token_that_works(tmp_path):
    env = _env(tmp_path)
    server = Served(env, _free_port(), tmp_path / "serve.log")
    try:
        output = server.wait_ready()
        hints = [line for line in output.splitlines() if "fhir-server token" in line]
        assert len(hints) == 1, output  # printed once
        assert "WARNING" not in hints[0] and "FHIR_SERVER_AUTH=off" not in output
        assert httpx.get(f"{server.base}/fhir/Patient").status_code == 401  # protection is on
        command = re.search(r"(\.venv/bin/fhir-server token .*)$", hints[0]).group(1)
        argv = shlex.split(command)
        assert argv[2:4] == ["--scope", "system/*.*"]
        run = subprocess.run([sys.executable, "-m", "fhir_server.cli", *argv[1:]], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        token = run.stdout.strip()
        r = httpx.get(f"{server.base}/fhir/Patient", params={"_count": 1}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    finally:
        server.stop()


def test_serve_behind_a_configured_base_prints_a_token_for_it(tmp_path):
    """With FHIR_SERVER_AUTH_BASE_URL set (a server behind a proxy) the hint names no
    host:port audience: the token command reads the same configuration and its token works."""
    env = _env(tmp_path, FHIR_SERVER_AUTH_BASE_URL="https://fhir.example.test/fhir")
    server = Served(env, _free_port(), tmp_path / "serve.log")
    try:
        hint = next(line for line in server.wait_ready().splitlines() if "fhir-server token" in line)
        assert hint.endswith(".venv/bin/fhir-server token --scope 'system/*.*'"), hint
        run = subprocess.run([sys.executable, "-m", "fhir_server.cli", "token", "--scope", "system/*.*"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        r = httpx.get(f"{server.base}/fhir/Patient", params={"_count": 1}, headers={"Authorization": f"Bearer {run.stdout.strip()}"})
        assert r.status_code == 200, r.text
    finally:
        server.stop()


def test_token_hint_for_the_listening_address():
    from fhir_server.cli import token_hint
    from fhir_server.config import Settings

    plain = Settings(auth_base_url="", public_base_url="")
    assert token_hint(plain, "127.0.0.1", 8080) == ".venv/bin/fhir-server token --scope 'system/*.*'"  # make serve's default
    assert token_hint(plain, "0.0.0.0", 9000).endswith("--audience http://127.0.0.1:9000/fhir")
    assert token_hint(plain, "::1", 9000).endswith("--audience http://[::1]:9000/fhir")
    assert token_hint(Settings(auth_base_url="", public_base_url="https://fhir.example.org/fhir"), "0.0.0.0", 80).endswith("token --scope 'system/*.*'")


def test_serve_with_protection_off_warns(tmp_path):
    env = _env(tmp_path, FHIR_SERVER_AUTH="off")
    server = Served(env, _free_port(), tmp_path / "serve.log")
    try:
        output = server.wait_ready()
        assert "WARNING: FHIR_SERVER_AUTH=off" in output  # the command's own line
        assert "protection is OFF" in output  # and the application's log warning
        assert "fhir-server token" not in output
        assert httpx.get(f"{server.base}/fhir/Patient", params={"_count": 1}).status_code == 200
        security = httpx.get(f"{server.base}/fhir/metadata").json()["rest"][0]["security"]
        assert "OFF" in security["description"]
    finally:
        server.stop()
