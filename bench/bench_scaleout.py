#!/usr/bin/env python3
"""Throughput from 1 to 2 `fhir-server serve` processes on one database.

For each backend (PostgreSQL; SQLite too with --db sqlite,postgres) the script

1. recreates the database and starts ONE `fhir-server serve` process (one
   uvicorn worker, background jobs on, as deployed), preloads --n Patients
   (transaction Bundles of 100), and gets a system/*.* bearer token from the
   server's own issuer (`fhir-server token`; the signing key lives in the
   database, so every process on it accepts the token; all processes share one
   public FHIR base, FHIR_SERVER_AUTH_BASE_URL, as they would behind a load
   balancer),
2. starts a SECOND process on the same database,
3. drives, interleaved --reps times after a warm-up, each operation with a
   fixed total of --connections connections:
     read    GET /fhir/Patient/{random preloaded id}
     search  GET /fhir/Patient?family=F&birthdate=D (one Patient per query)
     create  POST /fhir/Patient
   once against process 1 alone (one `wrk`, all connections), and once against
   both processes (one `wrk` per process, connections split evenly: what a
   round-robin balancer does); req/s are summed, p50 is the larger of the two,
4. prints the medians and the ratio 2 processes / 1 process per operation.

Every request carries the bearer token. The machine's cores are shared by
both servers, the database and the load generator, so the ratio says how
much a second process helps ON THIS MACHINE; on separate hosts each process
would bring its own cores (see docs/scaling.md).

    .venv/bin/python bench/bench_scaleout.py --duration 8 --reps 3 \\
        --pg-url postgresql+psycopg://postgres@127.0.0.1:55432/fhir_scaleout

It prints figures; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from benchlib import recreate_pg_database, server_bearer_headers, stop_group  # noqa: E402

PUBLIC_BASE = "http://fhir.scaleout.example/fhir"  # the one audience every process accepts
FAMILIES = ["Nowak", "Hansen", "Johansson", "Virtanen", "Jensen", "Berg", "Kowalska", "Lind", "Nieminen", "Olsen"]
OPS = ("read", "search", "create")

READ_LUA = r"""
paths = {}
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6))
  headers = {["Accept"] = "application/fhir+json", ["Authorization"] = "Bearer " .. args[2]}
end
function request()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
"""

CREATE_LUA = r"""
local n = 0
function init(args)
  run = args[1]
  headers = {["Content-Type"] = "application/fhir+json", ["Accept"] = "application/fhir+json",
             ["Authorization"] = "Bearer " .. args[2]}
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6))
  salt = math.random(1, 1000000000)
end
function request()
  n = n + 1
  local body = string.format(
    '{"resourceType":"Patient","identifier":[{"system":"urn:scaleout","value":"%s-%d-%d"}],' ..
    '"active":true,"name":[{"family":"Scale%d","given":["W%d"]}],"gender":"female",' ..
    '"birthDate":"19%02d-%02d-%02d"}', run, salt, n, n % 50, n, n % 100, (n % 12) + 1, (n % 28) + 1)
  return wrk.format("POST", "/fhir/Patient", headers, body)
end
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def patient(i: int) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:scaleout", "value": f"load-{i}"}],
        "active": True,
        "name": [{"family": f"{FAMILIES[i % 10]}{i // 100}", "given": [f"P{i}"]}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{1940 + i % 70}-{1 + i % 12:02d}-{1 + (i // 12) % 28:02d}",
    }


# ---------------------------------------------------------------------- processes


class Serve:
    """`fhir-server serve --port 0` in its own session; reads the bound port from uvicorn's log."""

    def __init__(self, name: str, db_url: str, work: Path):
        self.log_path = work / f"{name}.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, FHIR_SERVER_DATABASE_URL=db_url, FHIR_SERVER_AUTH_BASE_URL=PUBLIC_BASE,
                   FHIR_SERVER_EXPORT_DIR=str(work / "export"), FHIR_SERVER_BLOB_DIR=str(work / "blobs"))
        env.pop("FHIR_SERVER_AUTH_SIGNING_KEY_FILE", None)
        exe = Path(sys.executable).with_name("fhir-server")
        self.popen = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", "0", "--log-level", "info"],
                                      env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.env = env
        deadline = time.monotonic() + 180
        while True:
            m = re.search(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)", self.log_path.read_bytes())
            if m:
                self.port = int(m.group(1))
                break
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        self.base = f"http://127.0.0.1:{self.port}/fhir"

    def stop(self) -> None:
        stop_group(self.popen)
        self._log.close()


def preload(base: str, n: int, token: str) -> list[str]:
    import httpx

    ids: list[str] = []
    headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=300) as client:
        for start in range(0, n, 100):
            entries = [{"request": {"method": "POST", "url": "Patient"}, "resource": patient(i)}
                       for i in range(start, min(n, start + 100))]
            r = client.post(base, content=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
                            headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"preload failed: {r.status_code} {r.text[:300]}")
            ids += [e["response"]["location"].split("/")[1] for e in r.json()["entry"]]
    return ids


# ---------------------------------------------------------------------- load


@dataclass
class Run:
    rps: float
    p50_ms: float
    errors: int


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def wrk(port: int, op: str, connections: int, duration: int, token: str, work: Path) -> Run:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if op == "create":
        argv += ["-s", str(work / "create.lua"), f"http://127.0.0.1:{port}", "--", f"r{random.randrange(10**9)}", token]
    else:
        argv += ["-s", str(work / "read.lua"), f"http://127.0.0.1:{port}", "--", str(work / f"{op}.paths"), token]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    p50 = re.search(r"^\s+50%\s+(\S+)\s*$", out, re.M).group(1)
    return Run(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), _ms(p50), errors)


def drive(ports: list[int], op: str, connections: int, duration: int, token: str, work: Path) -> Run:
    """One wrk per process, connections split evenly, all at once; req/s summed."""
    split = [connections // len(ports) + (1 if i < connections % len(ports) else 0) for i in range(len(ports))]
    with ThreadPoolExecutor(len(ports)) as pool:
        runs = list(pool.map(lambda pc: wrk(pc[0], op, pc[1], duration, token, work), zip(ports, split)))
    return Run(sum(r.rps for r in runs), max(r.p50_ms for r in runs), sum(r.errors for r in runs))


# ---------------------------------------------------------------------- one backend


def bench_backend(backend: str, db_url: str, args, work: Path) -> dict:
    servers: list[Serve] = []
    try:
        servers.append(Serve(f"{backend}-p1", db_url, work))
        token = server_bearer_headers(db_url, PUBLIC_BASE, servers[0].env)["Authorization"].split(" ", 1)[1]
        log(f"[{backend}] preloading {args.n} Patients")
        ids = preload(servers[0].base, args.n, token)
        (work / "read.paths").write_text("".join(f"/fhir/Patient/{i}\n" for i in ids))
        (work / "search.paths").write_text("".join(
            f"/fhir/Patient?family={p['name'][0]['family']}&birthdate={p['birthDate']}\n"
            for p in (patient(i) for i in range(args.n))))
        servers.append(Serve(f"{backend}-p2", db_url, work))
        ports = [s.port for s in servers]
        results: dict[tuple[str, int], list[Run]] = {}
        for op in OPS:  # warm-up: caches, prepared statements, pools in both processes
            drive(ports, op, args.connections, 2, token, work)
        for rep in range(args.reps):
            for op in OPS:
                for procs in (1, 2):
                    r = drive(ports[:procs], op, args.connections, args.duration, token, work)
                    results.setdefault((op, procs), []).append(r)
                    log(f"[{backend}] rep {rep + 1} {op:6s} {procs} process(es): {r.rps:8.0f} req/s  p50 {r.p50_ms:6.1f} ms"
                        f"  errors {r.errors}")
        return results
    finally:
        for s in servers:
            s.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="postgres", help="backends: postgres,sqlite")
    ap.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:55432/fhir_scaleout",
                    help="PostgreSQL database (dropped and recreated)")
    ap.add_argument("--n", type=int, default=5000, help="Patients preloaded")
    ap.add_argument("--connections", type=int, default=16, help="total connections (split across processes)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per run")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          f"(servers, database and wrk share them)")
    table = []
    for backend in args.db.split(","):
        with tempfile.TemporaryDirectory(prefix=f"scaleout-{backend}-") as tmp:
            work = Path(tmp)
            (work / "read.lua").write_text(READ_LUA)
            (work / "create.lua").write_text(CREATE_LUA)
            if backend == "postgres":
                recreate_pg_database(args.pg_url)
                url = args.pg_url
            else:
                url = f"sqlite:///{work / 'shared.sqlite'}"
            results = bench_backend(backend, url, args, work)
        for op in OPS:
            one = statistics.median(r.rps for r in results[(op, 1)])
            two = statistics.median(r.rps for r in results[(op, 2)])
            table.append((backend, op, one, statistics.median(r.p50_ms for r in results[(op, 1)]), two,
                          statistics.median(r.p50_ms for r in results[(op, 2)]), two / one,
                          sum(r.errors for k in ((op, 1), (op, 2)) for r in results[k])))
    print(f"\nmedians of {args.reps} runs of {args.duration}s, {args.connections} connections in total, "
          f"{args.n} Patients, bearer token on every request")
    print(f"{'backend':9s} {'op':7s} {'1 proc req/s':>13s} {'p50 ms':>7s} {'2 procs req/s':>14s} {'p50 ms':>7s} "
          f"{'2/1':>6s} {'errors':>7s}")
    for backend, op, one, p1, two, p2, ratio, errors in table:
        print(f"{backend:9s} {op:7s} {one:13.0f} {p1:7.1f} {two:14.0f} {p2:7.1f} {ratio:6.2f} {errors:7d}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
