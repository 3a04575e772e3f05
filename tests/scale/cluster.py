"""Several `fhir-server serve` processes on one database, for the scale-out tests.

Each process is started with `--port 0` (the operating system picks a free
port; the test reads the real one from uvicorn's start-up line), in a process
group of its own, with the environment a deployment behind a load balancer
would give every instance: one database, one public FHIR base (the token
audience), one export directory on shared storage.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.processes import stop_group

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class ServeProcess:
    """`python -m fhir_server.cli serve --port 0`; `.base` is its FHIR base URL."""

    def __init__(self, env: dict[str, str], headers: dict[str, str], timeout: float = 90.0):
        self.log = tempfile.NamedTemporaryFile(prefix="fhir-serve-", suffix=".log", delete=False)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "fhir_server.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--log-level", "info"],
            cwd=ROOT, env={**os.environ, **env}, start_new_session=True, stdout=subprocess.DEVNULL, stderr=self.log,
        )
        self.port = self._wait_for_port(timeout)
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.origin}/fhir"
        deadline = time.time() + timeout
        while True:
            try:
                if httpx.get(self.base + "/metadata", headers=headers, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("server did not answer /metadata: " + self.output()[-3000:])
            time.sleep(0.2)

    def _wait_for_port(self, timeout: float) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = _LISTENING.search(Path(self.log.name).read_bytes())
            if m:
                return int(m.group(1))
            if self.popen.poll() is not None:
                raise RuntimeError("server exited: " + self.output()[-3000:])
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start listening: " + self.output()[-3000:])

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        """SIGINT (uvicorn shuts down cleanly, the job worker is joined), SIGKILL after 20 s."""
        stop_group(self.popen)
        self.log.close()
        os.unlink(self.log.name)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
