"""What the REST benchmarks share: server processes, the preloaded data, the load generators.

`bench_rest.py` (reads, searches, creates) and `bench_search_floor.py` import it.
Nothing here measures on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import stop_group

BENCH_DIR = Path(__file__).resolve().parent
CLIENT_SCRIPT = BENCH_DIR / "bench_rest.py"  # the Python load client runs as `bench_rest.py --_client ...`


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


class Proc:
    """A child in its own session, so stopping it also stops uvicorn's worker processes."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        stop_group(self.popen)
        self._log.close()


def wait_ready(proc: Proc, url: str, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout:.0f}s:\n{proc.log_tail()}")


def keepalive_probe(port: int, path: str, token: str | None = None, n: int = 7) -> float:
    """Median latency in ms of back-to-back GETs on ONE keep-alive connection.

    About 40 ms here, against about 1 ms on a fresh connection, means Nagle's algorithm
    is meeting the client's delayed ACK: TCP_NODELAY is missing on the server side."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("GET", path, headers={"Accept": "application/fhir+json", **_auth(token)})
            conn.getresponse().read()
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        conn.close()
    return statistics.median(times[1:])


NAGLE_SUSPECT_MS = 30.0
NAGLE_WARNINGS: list[str] = []


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

FAMILIES = ["Nowak", "Kowalski", "Hansen", "Johansson", "Virtanen", "Jensen", "Nielsen", "Wiśniewska", "Berg", "Lind"]
GIVENS = ["Anna", "Piotr", "Ingrid", "Lars", "Aino", "Mikkel", "Zofia", "Erik", "Sofie", "Jan"]


def family_of(i: int, families: int = 10) -> str:
    """Patient i's family name; `families` names in all (bench_rest: one per 100 Patients)."""
    k = i % families
    return FAMILIES[k % 10] + (str(k // 10) if families > 10 else "")


def bench_patient(i: int, families: int = 10) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:bench", "value": f"load-{i}"}],
        "active": True,
        "name": [{"family": family_of(i, families), "given": [GIVENS[(i // 10) % 10], f"B{i}"]}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{1940 + i % 70}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "address": [{"city": "Bench", "postalCode": f"{i % 100000:05d}", "country": "PL"}],
    }


def preload(base: str, n: int, batch: int = 100, token: str | None = None, families: int = 10) -> list[str]:
    import httpx

    ids: list[str] = []
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", **_auth(token)}
    with httpx.Client(timeout=120.0) as client:
        for start in range(0, n, batch):
            entries = [
                {"request": {"method": "POST", "url": "Patient"}, "resource": bench_patient(i, families)}
                for i in range(start, min(n, start + batch))
            ]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            r = client.post(base, content=json.dumps(bundle), headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"transaction failed: {r.status_code} {r.text[:500]}")
            for e in r.json().get("entry", []):
                loc = e["response"]["location"]  # Patient/<id>/_history/1
                ids.append(loc.split("/")[1])
    if len(ids) != n:
        raise RuntimeError(f"expected {n} ids from the preload, got {len(ids)}")
    return ids


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def server_token(db_url: str, port: int, env: dict[str, str]) -> str:
    """A system/*.* token from the server's own issuer for http://127.0.0.1:PORT/fhir."""
    out = subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "token", "--scope", "system/*.*", "--ttl", "86400",
         "--audience", f"http://127.0.0.1:{port}/fhir", "--database-url", db_url],
        env=env, capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


# --------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0  # non-2xx responses plus socket errors / timeouts
    requests: int = 0


WRK_READ_LUA = r"""
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
paths = {}
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
  headers = {["Accept"] = "application/fhir+json"}
  if args[2] and #args[2] > 0 then headers["Authorization"] = "Bearer " .. args[2] end
end
function request()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
"""

WRK_CREATE_LUA = r"""
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local n = 0
local families = {"Nowak", "Hansen", "Johansson", "Virtanen", "Jensen", "Berg"}
local headers = {["Content-Type"] = "application/fhir+json", ["Accept"] = "application/fhir+json"}
function init(args)
  run = args[1] or "r"
  if args[2] and #args[2] > 0 then headers["Authorization"] = "Bearer " .. args[2] end
end
function request()
  n = n + 1
  local body = string.format(
    '{"resourceType":"Patient","identifier":[{"system":"urn:bench","value":"%s-%d-%d"}],' ..
    '"active":true,"name":[{"family":"%s","given":["W%d","N%d"]}],"gender":"%s",' ..
    '"birthDate":"19%02d-%02d-%02d","address":[{"city":"Bench","country":"PL"}]}',
    run, tid or 0, n, families[(n % #families) + 1], tid or 0, n,
    (n % 2 == 0) and "female" or "male", n % 100, (n % 12) + 1, (n % 28) + 1)
  return wrk.format("POST", "/fhir/Patient", headers, body)
end
"""

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"cannot parse wrk duration {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> RunResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    total = re.search(r"(\d+) requests in", out)
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return RunResult(
        rps=rps,
        p50_ms=_ms(lat["50"]),
        p99_ms=_ms(lat["99"]),
        errors=errors,
        requests=int(total.group(1)) if total else 0,
    )


class WrkClient:
    name = "wrk"

    def __init__(self, wrk: str, threads: int, connections: int, work: Path):
        self.wrk = wrk
        self.threads = threads
        self.connections = connections
        self.read_lua = work / "read.lua"
        self.read_lua.write_text(WRK_READ_LUA)
        self.create_lua = work / "create.lua"
        self.create_lua.write_text(WRK_CREATE_LUA)
        self.runs = 0

    def run(self, op: str, port: int, paths_file: Path, duration: float, token: str | None = None) -> RunResult:
        self.runs += 1
        argv = [
            self.wrk, f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, round(duration))}s",
            "--latency", "--timeout", "10s",
        ]
        if op == "create":
            argv += ["-s", str(self.create_lua), f"http://127.0.0.1:{port}", "--", f"r{os.getpid()}x{self.runs}", token or ""]
        else:
            argv += ["-s", str(self.read_lua), f"http://127.0.0.1:{port}", "--", str(paths_file), token or ""]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
        try:
            return parse_wrk(proc.stdout)
        except (AttributeError, KeyError, ValueError) as exc:
            raise RuntimeError(f"cannot parse wrk output ({exc}):\n{proc.stdout}") from exc


class PythonClient:
    """asyncio + httpx, in `threads` separate processes sharing the connections."""

    name = "python (asyncio+httpx)"

    def __init__(self, threads: int, connections: int):
        self.procs = max(1, threads)
        self.connections = connections
        self.runs = 0

    def run(self, op: str, port: int, paths_file: Path, duration: float, token: str | None = None) -> RunResult:
        self.runs += 1
        per = [self.connections // self.procs + (1 if i < self.connections % self.procs else 0) for i in range(self.procs)]
        children = [
            subprocess.Popen(
                [sys.executable, str(CLIENT_SCRIPT), "--_client", op, "--_port", str(port),
                 "--_paths", str(paths_file), "--_conns", str(c), "--duration", str(duration),
                 "--_tag", f"r{os.getpid()}x{self.runs}p{i}", "--_token", token or ""],
                stdout=subprocess.PIPE, text=True,
            )
            for i, c in enumerate(per) if c > 0
        ]
        lat: list[float] = []
        count = errors = 0
        elapsed = 0.0
        for child in children:
            out, _ = child.communicate()
            if child.returncode != 0:
                raise RuntimeError(f"python load client failed ({child.returncode})")
            data = json.loads(out)
            lat.extend(data["lat"])
            count += data["count"]
            errors += data["errors"]
            elapsed = max(elapsed, data["elapsed"])
        lat.sort()
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
        return RunResult(rps=count / elapsed if elapsed else 0.0, p50_ms=pct(0.50), p99_ms=pct(0.99), errors=errors, requests=count)


async def _client_main(op: str, port: int, paths_file: str, conns: int, duration: float, tag: str, token: str = "") -> dict:
    import httpx

    paths = [p for p in Path(paths_file).read_text().splitlines() if p]
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    lat: list[float] = []
    state = {"count": 0, "errors": 0, "n": 0}
    hdr_read = {"Accept": "application/fhir+json", **_auth(token)}
    hdr_create = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", **_auth(token)}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10.0) as client:
        start = time.perf_counter()
        stop_at = start + duration

        async def worker(w: int) -> None:
            rnd = random.Random(hash((tag, w)))
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    if op == "create":
                        state["n"] += 1
                        body = bench_patient(state["n"])
                        body["identifier"][0]["value"] = f"{tag}-{state['n']}"
                        r = await client.post("/fhir/Patient", content=json.dumps(body), headers=hdr_create)
                    else:
                        r = await client.get(rnd.choice(paths), headers=hdr_read)
                    ok = 200 <= r.status_code < 400
                except httpx.HTTPError:
                    ok = False
                t1 = time.perf_counter()
                lat.append((t1 - t0) * 1e3)
                state["count"] += 1
                if not ok:
                    state["errors"] += 1

        await asyncio.gather(*(worker(w) for w in range(conns)))
        elapsed = time.perf_counter() - start
    return {"count": state["count"], "errors": state["errors"], "elapsed": elapsed, "lat": lat}
