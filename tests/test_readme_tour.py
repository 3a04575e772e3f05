"""The README's curl tour runs as written, against a live server on a fresh database."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def tour_commands() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A short tour with curl", 1)[1]
    m = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert m, "the README's tour has no ```sh block"
    return m.group(1)


@pytest.fixture
def fresh_server(settings, tmp_path, auth_headers):
    """The app on a database of its own (the tour creates a personnummer other tests use too)."""
    import uvicorn

    from fhir_server.bootstrap import build_app

    app = build_app(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'tour.sqlite'}",
                                                "export_dir": str(tmp_path / "export")}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(not (shutil.which("bash") and shutil.which("curl")), reason="the tour needs bash and curl")
def test_readme_tour_runs_as_written(fresh_server, auth_headers):
    script = tour_commands()
    lines = script.splitlines()
    assert lines[0].startswith("S=http://127.0.0.1:8080"), "the tour starts by naming the server"
    # Point it at the test server and make every request fail loudly. The token is the one the
    # README's own `fhir-server token` line makes (this process's key and audience are in the
    # environment the tour inherits, as a user's shell has the server's configuration).
    fn = next(i for i, line in enumerate(lines) if line.startswith("fhir() {"))
    assert any(line.startswith("TOKEN=$(.venv/bin/fhir-server token ") for line in lines[:fn])
    assert 'curl -s -H "Authorization: Bearer $TOKEN" "$@"' in lines[fn]
    lines[0] = f"S={fresh_server}"
    lines[fn] = lines[fn].replace("curl -s ", "curl -sS --fail-with-body ", 1)
    run = subprocess.run(["bash", "-e", "-c", "\n".join(lines)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"
    assert "MSA|AA|TOUR0001" in run.stdout.replace("\r", "\n")
    assert "HTTP/1.1 201 Created" in run.stdout

    base = f"{fresh_server}/fhir"
    with httpx.Client(headers=auth_headers, timeout=30) as c:
        found = c.get(f"{base}/Patient?identifier=19121212-1212").json()
        assert found["total"] == 1
        patient = found["entry"][0]["resource"]
        assert patient["address"][0]["city"] == "Stockholm"  # the last step, the ADT^A01, updated it
        versions = {int(e["resource"]["meta"]["versionId"]): e["resource"]
                    for e in c.get(f"{base}/Patient/{patient['id']}/_history").json()["entry"]}
        assert versions[1]["identifier"][0]["value"] == "19121212-1212"  # stored as sent
        assert versions[2]["telecom"][0]["value"] == "+46 8 123 456"  # the update
        assert versions[3]["gender"] == "male" and versions[4]["active"] is True
        assert versions[5]["maritalStatus"]["coding"][0]["code"] == "M"  # the FHIRPath Patch
        assert {"system": "urn:example:tags", "code": "tour"} in versions[5]["meta"]["tag"]  # $meta-add, in place
        obs = c.get(f"{base}/Observation?subject=Patient/{patient['id']}&code=http://loinc.org|8480-6").json()
        assert obs["total"] == 1
        enc = obs["entry"][0]["resource"]["encounter"]["reference"]
        assert c.get(f"{base}/{enc}").status_code == 200
        assert c.get(f"{base}/Patient?identifier=urn:oid:2.16.840.1.113883.3.4424.1.1.616|44051401458").json()["total"] == 1
