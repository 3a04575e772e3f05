#!/usr/bin/env python3
"""What one access-log event costs PostgreSQL and the writer, by COPY format (text or binary).

The access log's batch writer (audit.writer, audit.log._copy) stores each read event as one
`audit_log` row and about five `audit_log_refs` rows by COPY. This script builds --events read
events shaped like bench_protected.py's (a patient token reading an Observation), migrates a
fresh database, and writes them in batches of --batch through `storage.repository.copy_rows`,
alternating the text and the binary format batch by batch. Per format it prints the PostgreSQL
backend's CPU per event (from /proc: PostgreSQL must run on this machine) and the writer's own
(process_time around the COPY calls), each over all batches of that format (/proc counts in
clock ticks of 10 ms: one batch alone is too short to read).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_audit_copy.py \
        --pg-url postgresql+psycopg://postgres@127.0.0.1:55433/fhir_audit_copy

It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import datetime, timezone

from benchlib import recreate_pg_database


def _proc_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg-url", required=True)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=800, help="events per COPY transaction (the writer's at ~4,000 reads/s)")
    args = ap.parse_args()

    from sqlalchemy import text

    from fhir_server.audit import log
    from fhir_server.audit.balp import AuditFacts
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade
    from fhir_server.storage.repository import binary_copy_types, copy_rows
    from fhir_server.storage.schema import audit_log, audit_log_refs

    recreate_pg_database(args.pg_url)
    db = Database(args.pg_url)
    upgrade(db.engine)
    types = (binary_copy_types(audit_log, log.MAIN_COLUMNS), binary_copy_types(audit_log_refs, log.REF_COLUMNS))
    cpu: dict[str, list[tuple[float, float]]] = {"text": [], "binary": []}
    pk = 0
    with db.engine.connect() as conn:
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        conn.commit()
        for n in range(args.events // args.batch):
            fmt = ("text", "binary")[n % 2]
            entries = [log.entry_of_facts(AuditFacts(
                "rest", "read", "R", 200, datetime.now(timezone.utc), subject=f"user-{i % 50}", client_id="portal",
                token_id=uuid.uuid4().hex, context_patient=f"p{i % 50}", client_address="127.0.0.1",
                server_base="http://127.0.0.1:8080/fhir", request_id=uuid.uuid4().hex,
                data=[("Observation", str(uuid.uuid4()))], patients=[f"p{i % 50}"])) for i in range(args.batch)]
            mains = [(pk + k, *e.main) for k, e in enumerate(entries, 1)]
            refs = [(pk + k, value, roles) for k, e in enumerate(entries, 1) for value, roles in e.refs.items()]
            pk += args.batch
            pg0, me0 = _proc_cpu(backend), time.process_time()
            copy_rows(conn, "audit_log", log.MAIN_COLUMNS, mains, types[0] if fmt == "binary" else None)
            copy_rows(conn, "audit_log_refs", log.REF_COLUMNS, refs, types[1] if fmt == "binary" else None)
            conn.commit()
            me = time.process_time() - me0
            time.sleep(0.05)  # /proc's figures move in clock ticks: let the backend's settle
            if n >= 4:  # the first batches warm caches and the relations' first pages
                cpu[fmt].append((_proc_cpu(backend) - pg0, me))
    db.dispose()
    print(f"access-log read events, {args.batch} per COPY, {len(cpu['text']) + len(cpu['binary'])} batches alternating formats; "
          f"{sum(len(e.refs) for e in entries) / len(entries):.1f} reference rows per event")
    for fmt, runs in cpu.items():
        pg = sum(r[0] for r in runs) / (len(runs) * args.batch) * 1e6
        me = sum(r[1] for r in runs) / (len(runs) * args.batch) * 1e6
        print(f"  {fmt:7s} PostgreSQL {pg:6.1f} us/event   writer (COPY calls) {me:5.1f} us/event")


if __name__ == "__main__":
    main()
