"""Binary upload/download: time and server memory by file size, raw vs the JSON form.

Starts `fhir-server serve` (SQLite, filesystem blob store in a temporary
directory) on a free port, then for each size uploads a PDF raw (streamed,
chunked), downloads it raw, and (up to --json-max-mb) does the same through
the JSON form (base64 in a Binary resource). While each transfer runs, the
server's resident memory (VmRSS from /proc) is sampled every 10 ms; the
figure printed is the peak growth over the idle server. Medians of --reps.

    .venv/bin/python bench/bench_binary.py
    .venv/bin/python bench/bench_binary.py --sizes 10,50,100 --reps 3
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import free_port, server_bearer_headers, stop_group  # noqa: E402

CHUNK = 256 * 1024


def pdf_head() -> bytes:
    import io

    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 760, "benchmark scan")
    c.save()
    return buf.getvalue()


HEAD = pdf_head()


def body(size: int):
    yield HEAD
    block = hashlib.sha256(b"bench").digest() * (CHUNK // 32)
    sent = len(HEAD)
    while sent < size:
        part = block[: min(CHUNK, size - sent)]
        sent += len(part)
        yield part


def whole(size: int) -> bytes:
    return b"".join(body(size))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """Sample a process's RSS while a block runs; `.growth` is the peak over the start, in MiB."""

    def __init__(self, pid: int):
        self.pid = pid

    def __enter__(self):
        self.base = rss_kib(self.pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.growth = (self.peak - self.base) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5,25,50,100", help="file sizes in MB (10^6 bytes)")
    ap.add_argument("--json-max-mb", type=int, default=25, help="largest size also sent as JSON (the JSON body limit is 50 MiB)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="bench-binary-"))
    port = free_port()
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": f"sqlite:///{work / 'fhir.sqlite'}", "FHIR_SERVER_BLOB_DIR": str(work / "blobs"),
           "FHIR_SERVER_RUN_BACKGROUND_JOBS": "false"}
    exe = Path(sys.executable).with_name("fhir-server")
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        with httpx.Client(timeout=600) as http:
            for _ in range(300):
                try:
                    if http.get(f"{base}/metadata").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            http.headers.update(server_bearer_headers(env["FHIR_SERVER_DATABASE_URL"], base, env))
            pid = proc.pid
            print(f"server pid {pid}; machine shared with other work, figures are noisy: compare within this run")
            print(f"{'size MB':>8} {'form':>5} {'up s':>7} {'up MB/s':>8} {'up RSS+MiB':>11} {'down s':>7} {'down RSS+MiB':>13} {'wire MB':>8}")
            for size_mb in (int(s) for s in args.sizes.split(",")):
                size = size_mb * 1_000_000
                for form in ("raw", "json"):
                    if form == "json" and size_mb > args.json_max_mb:
                        continue
                    ups, downs, up_mem, down_mem = [], [], [], []
                    wire = size
                    for _rep in range(args.reps):
                        payload = None
                        if form == "json":
                            payload = b'{"resourceType":"Binary","contentType":"application/pdf","data":"' + base64.b64encode(whole(size)) + b'"}'
                            wire = len(payload)
                        with PeakRss(pid) as m:
                            t0 = time.perf_counter()
                            if form == "raw":
                                r = http.post(f"{base}/Binary", content=body(size), headers={"Content-Type": "application/pdf"})
                            else:
                                r = http.post(f"{base}/Binary", content=payload, headers={"Content-Type": "application/fhir+json"})
                            ups.append(time.perf_counter() - t0)
                        del payload
                        assert r.status_code == 201, r.text[:300]
                        up_mem.append(m.growth)
                        bid = r.json()["id"]
                        accept = "application/pdf" if form == "raw" else "application/fhir+json"
                        with PeakRss(pid) as m:
                            t0 = time.perf_counter()
                            n = 0
                            with http.stream("GET", f"{base}/Binary/{bid}", headers={"Accept": accept}) as resp:
                                for part in resp.iter_bytes():
                                    n += len(part)
                            downs.append(time.perf_counter() - t0)
                        down_mem.append(m.growth)
                    up = statistics.median(ups)
                    print(f"{size_mb:>8} {form:>5} {up:>7.2f} {size / 1e6 / up:>8.1f} {statistics.median(up_mem):>11.1f} "
                          f"{statistics.median(downs):>7.2f} {statistics.median(down_mem):>13.1f} {wire / 1e6:>8.1f}")
    finally:
        stop_group(proc)
        log.close()


if __name__ == "__main__":
    main()
