"""Real parts for the document tests: an S3-compatible server (moto in server
mode, over HTTP on a free loopback port), a ClamAV daemon with a test
signature, and real sample files (PDF from reportlab, images from Pillow)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3 endpoint URL served by moto's server (a real HTTP server) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_endpoint):
    from fhir_server.storage.blobs.s3 import S3BlobStore

    return S3BlobStore(
        f"blobs-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint, region="eu-north-1",
        access_key_id="test", secret_access_key="test", create_bucket=True,
    )


@pytest.fixture(scope="session")
def clamd_address(tmp_path_factory):
    """A clamd (ClamAV daemon) on a unix socket, with a body signature for the EICAR
    test string as its only database; skips when ClamAV is not installed."""
    clamd = shutil.which("clamd") or ("/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else None)
    if clamd is None:
        pytest.skip("clamd is not installed (apt-get install clamav-daemon)")
    root = tmp_path_factory.mktemp("clamd")
    (root / "db").mkdir()
    (root / "db" / "test.ndb").write_text(f"Test-EICAR:0:*:{EICAR.hex()}\n")
    sock = root / "clamd.sock"
    conf = root / "clamd.conf"
    conf.write_text(
        f"Foreground yes\nDatabaseDirectory {root / 'db'}\nLocalSocket {sock}\nLogFile {root / 'clamd.log'}\n"
        f"StreamMaxLength 200M\nUser {os.environ.get('USER') or 'root'}\n"
    )
    proc = subprocess.Popen([clamd, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"clamd exited: {(root / 'clamd.log').read_text() if (root / 'clamd.log').exists() else ''}")
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                    s.sendall(b"zPING\0")
                    if s.recv(16).startswith(b"PONG"):
                        break
            except OSError:
                pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail("clamd did not start within 60 s")
        time.sleep(0.2)
    yield f"unix:{sock}"
    proc.terminate()
    proc.wait(timeout=10)


def pdf_bytes(*lines: str) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    for i, line in enumerate(lines or ("Regning",)):
        c.drawString(72, 760 - 16 * i, line)
    c.save()
    return buf.getvalue()


def image_bytes(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def heic_bytes() -> bytes:
    """An ISO-BMFF file with the HEIC brand (what iPhones write); Pillow cannot encode HEIC."""
    body = b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
    ftyp = (len(body) + 4).to_bytes(4, "big") + body
    meta = (16).to_bytes(4, "big") + b"meta" + b"\x00" * 8
    return ftyp + meta + os.urandom(4000)
