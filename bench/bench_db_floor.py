"""The PostgreSQL floor under single-resource creates: how many create
transactions per second this machine sustains when the client does nothing but
send the rows, with no HTTP, validation or search extraction.

Each transaction has the shape the server's create sends (one statement: the
resources row, its version row and, with --index-rows N, N search-index rows,
then COMMIT), from --threads client threads for --duration seconds. It prints
transactions/s and the CPU per transaction spent by PostgreSQL's processes and
by this client, read from /proc. Compare with bench_rest.py's create figure: the
gap is the server's own work.

    .venv/bin/python bench/bench_db_floor.py --pg-url postgresql+psycopg://postgres@127.0.0.1:55433/fhir_bench

The database in --pg-url is dropped and recreated.
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone

BODY = b'{"resourceType":"Patient","id":"x","meta":{"versionId":"1"},"name":[{"family":"Nowak","given":["W"]}]}'


def postgres_cpu_seconds() -> float:
    total = 0
    for pid in subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True).stdout.split():
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / 100


def create_sql(index_rows: int) -> str:
    """One statement, as repository.flush sends it: CTE inserts, then the version row."""
    parts = ["a AS (INSERT INTO resources (pk, res_type, res_id, version_id, last_updated, deleted, content) "
             "VALUES ($1, 'Patient', $2, 1, $3, false, $4))"]
    if index_rows:
        rows = ",".join(f"($1, 'Patient', 'p{i % 12}', $5, $6)" for i in range(index_rows))
        parts.append(f"s AS (INSERT INTO idx_string (res_pk, res_type, param, value_norm, value_exact) VALUES {rows})")
    return ("WITH " + ", ".join(parts) + " INSERT INTO resource_versions "
            "(res_pk, res_type, res_id, version_id, last_updated, method, deleted, content) "
            "VALUES ($1, 'Patient', $2, 1, $3, 'POST', false, $4)")


def run(conninfo: str, threads: int, duration: float, index_rows: int) -> tuple[float, float, float]:
    import psycopg

    sql = create_sql(index_rows)
    conns = [psycopg.connect(conninfo) for _ in range(threads)]  # open until measured: their CPU counts
    counts: list[int] = []
    stop_at = 0.0

    def worker(conn) -> None:
        cur = psycopg.RawCursor(conn)
        seq = conn.execute("SELECT pg_get_serial_sequence('resources', 'pk')").fetchone()[0]
        n = 0
        while time.perf_counter() < stop_at:
            pk = conn.execute(f"SELECT nextval('{seq}')").fetchone()[0]
            params = [pk, uuid.uuid4().hex, datetime.now(timezone.utc), BODY]
            if index_rows:
                params += ["nowak", "Nowak"]
            cur.execute(sql, params)
            conn.commit()
            n += 1
        counts.append(n)

    pg0, cpu0 = postgres_cpu_seconds(), time.process_time()
    stop_at = time.perf_counter() + duration
    workers = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    n = sum(counts)
    pg_ms = (postgres_cpu_seconds() - pg0) / n * 1e3
    client_ms = (time.process_time() - cpu0) / n * 1e3
    for c in conns:
        c.close()
    return n / duration, pg_ms, client_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg-url", required=True)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--index-rows", default="0,30", help="index rows per create to try (a Patient has 20-35)")
    args = ap.parse_args()

    from benchlib import recreate_pg_database  # same directory
    from sqlalchemy.engine import make_url

    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade

    url = args.pg_url
    recreate_pg_database(url)
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    u = make_url(url)
    conninfo = f"host={u.host} port={u.port or 5432} dbname={u.database} user={u.username}" + (
        f" password={u.password}" if u.password else "")
    print(f"{args.threads} threads, {args.duration:.0f} s per run")
    print(f"{'index rows':>10} {'tx/s':>8} {'PG ms/tx':>9} {'client ms/tx':>13}")
    for rows in (int(x) for x in args.index_rows.split(",")):
        rate, pg_ms, client_ms = run(conninfo, args.threads, args.duration, rows)
        print(f"{rows:>10} {rate:>8.0f} {pg_ms:>9.2f} {client_ms:>13.2f}")


if __name__ == "__main__":
    main()
