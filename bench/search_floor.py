#!/usr/bin/env python3
"""The database floor under a search: the server's own SQL, run straight through its driver.

For each search path in --paths (e.g. `/fhir/Patient?family=F&birthdate=D`) the
statements are planned and compiled exactly as the server's fast search path does
(`search.engine.prepare_search`, `search.fast.cache_for`: same SQL text, same bound
values), once, before the clock starts. Then --connections connections, spread over
--procs processes (asyncpg coroutines on PostgreSQL; sqlite3 connections on threads
for SQLite), execute random ones of them for --duration seconds and fetch every row.
It prints one JSON object: {"rps", "p50_ms", "p99_ms", "requests"}.

    .venv/bin/python bench/search_floor.py --db-url sqlite:////tmp/x.sqlite --paths paths.txt

Used by bench_rest.py (the `floor` row beside `search`); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit


def render(db_url: str, paths: list[str]) -> list[tuple[str, tuple]]:
    """The page statement of each search path, as the fast path sends it to the driver."""
    from fhir_server.search import custom  # noqa: F401  (registry loaded as in the server)
    from fhir_server.search.engine import SearchRequest, prepare_search
    from fhir_server.search.fast import cache_for
    from fhir_server.storage.async_reads import reader_for

    cache = cache_for(reader_for(db_url, 1))
    out = []
    for p in paths:
        u = urlsplit(p)
        res_type = u.path.rstrip("/").rsplit("/", 1)[1]
        prep = prepare_search(None, SearchRequest(res_type, parse_qsl(u.query, keep_blank_values=True), "http://bench/fhir"))
        out.append(cache.render(prep.page_q))
    return out


def _pg_proc(db_url: str, stmts, conns: int, duration: float, seed: int, q) -> None:
    import asyncpg

    from fhir_server.storage.async_reads import _asyncpg_dsn

    async def main():
        dsn, settings = _asyncpg_dsn(db_url)
        cs = [await asyncpg.connect(dsn, server_settings=settings) for _ in range(conns)]
        lat: list[float] = []
        stop_at = time.perf_counter() + duration
        rnd = random.Random(seed)

        async def worker(c):
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                sql, params = stmts[rnd.randrange(len(stmts))]
                await c.fetch(sql, *params)
                lat.append((time.perf_counter() - t0) * 1e3)

        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in cs))
        elapsed = time.perf_counter() - start
        for c in cs:
            await c.close()
        return lat, elapsed

    lat, elapsed = asyncio.run(main())
    q.put((lat, elapsed))


def _sqlite_proc(db_url: str, stmts, conns: int, duration: float, seed: int, q) -> None:
    from fhir_server.storage.async_reads import configure_reader

    path = db_url.split(":///", 1)[1]
    lat: list[float] = []
    stop_at = time.perf_counter() + duration

    def worker(i: int) -> None:
        c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        configure_reader(c)  # the server's read connection settings (memory map, page cache)
        rnd = random.Random(seed * 1000 + i)
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            sql, params = stmts[rnd.randrange(len(stmts))]
            c.execute(sql, params).fetchall()
            lat.append((time.perf_counter() - t0) * 1e3)
        c.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.put((lat, time.perf_counter() - start))


def run(db_url: str, paths: list[str], connections: int, procs: int, duration: float) -> dict:
    stmts = render(db_url, paths)
    target = _sqlite_proc if db_url.startswith("sqlite") else _pg_proc
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    per = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    children = [ctx.Process(target=target, args=(db_url, stmts, c, duration, i, q)) for i, c in enumerate(per) if c]
    for ch in children:
        ch.start()
    results = [q.get() for _ in children]
    for ch in children:
        ch.join()
    lat = sorted(x for r in results for x in r[0])
    elapsed = max(r[1] for r in results)
    pct = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else float("nan")  # noqa: E731
    return {"rps": len(lat) / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "requests": len(lat)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-url", required=True)
    ap.add_argument("--paths", required=True, help="file of search paths, one a line")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args(argv)
    paths = [p for p in Path(args.paths).read_text().splitlines() if p]
    print(json.dumps(run(args.db_url, paths, args.connections, args.procs, args.duration)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
