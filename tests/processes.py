"""Stopping server processes the tests start in their own session (process group)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(popen: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGINT to the group (uvicorn shuts down cleanly, the job worker is joined), SIGKILL
    after `grace` seconds."""
    if popen.poll() is not None:
        return
    os.killpg(popen.pid, signal.SIGINT)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
