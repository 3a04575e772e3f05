#!/usr/bin/env python3
"""What the case-handler rule (search/case_access.py) costs a staff request, in process.

One SQLite (or --pg-url PostgreSQL) database with --cases Danish patients, each with a Claim
(provider: a Practitioner), a DocumentReference of the claim with its Binary, and a case consent
in force naming the patient only (so the case's handlers are those the Claim names). Requests,
interleaved request by request over the cases:

  system    a system/*.* token (no case rule);
  handler   the Claim's provider (user/*.rs, fhirUser Practitioner/...): sees the documents;
  other     another Practitioner: sees none of them.

Kinds: `search` DocumentReference?subject=Patient/x, `read` DocumentReference/id, `binary`
Binary?_id=id. Prints per scenario and kind: median and mean latency (ms) over --reps runs of --n
requests through the whole ASGI stack (TestClient), the ratio to `system`, and SQL statements per
request. Run it against another checkout (PYTHONPATH) for a before/after. Asserts nothing.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_case_handlers.py --n 200 --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
AUDIENCE = "http://testserver/fhir"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--pg-url", default=None)
    args = ap.parse_args()

    from joserfc.jwk import RSAKey

    fd, keyfile = tempfile.mkstemp(prefix="bench-handlers-key-", suffix=".pem")
    with os.fdopen(fd, "wb") as fh:
        fh.write(RSAKey.generate_key(2048, private=True).as_pem(private=True))
    os.environ["FHIR_SERVER_AUTH_SIGNING_KEY_FILE"] = keyfile
    os.environ["FHIR_SERVER_AUTH_BASE_URL"] = AUDIENCE
    os.environ["FHIR_SERVER_TERMINOLOGY_LOAD"] = "false"
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from fhir_server.auth.keys import load_pem
    from fhir_server.auth.tokens import issue_access_token
    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings
    from tests.security.family import consent, new_id, patient, put

    tmp = Path(tempfile.mkdtemp(prefix="bench-handlers-"))
    url = args.pg_url or f"sqlite:///{tmp / 'fhir.sqlite'}"
    if args.pg_url:
        from benchlib import recreate_pg_database

        recreate_pg_database(args.pg_url)
    app = build_app(Settings(database_url=url, export_dir=str(tmp / "export"), blob_dir=str(tmp / "blobs"),
                             run_background_jobs=False, terminology_load=False))
    key = load_pem(keyfile)

    def client(scope: str, fhir_user: str | None = None) -> TestClient:
        tok = issue_access_token(key, AUDIENCE, AUDIENCE, scope, "bench", "bench", 36000, None, fhir_user)
        return TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {tok}"})

    system = client("system/*.*")
    cases = []
    for i in range(args.cases):
        pid, _ = patient(system, "DK", date(1990, 1, 1 + i % 28))
        prac, claim, doc = new_id("prac"), new_id("claim"), new_id("doc")
        put(system, {"resourceType": "Claim", "id": claim, "status": "active", "use": "claim", "patient": {"reference": f"Patient/{pid}"},
                     "created": "2026-01-01", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
                     "provider": {"reference": f"Practitioner/{prac}"}, "priority": {"coding": [{"code": "normal"}]},
                     "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Policy"}}]})
        r = system.post("/fhir/Binary", content=b"case text", headers={"Content-Type": "text/plain", "X-Security-Context": f"DocumentReference/{doc}"})
        binary = r.json()["id"] if r.content else r.headers["location"].split("/")[-3]
        put(system, {"resourceType": "DocumentReference", "id": doc, "status": "current", "subject": {"reference": f"Patient/{pid}"},
                     "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/{binary}"}}],
                     "context": {"related": [{"reference": f"Claim/{claim}"}]}})
        consent(system, pid, {"type": "permit", "period": {"start": "2026-01-01"},
                              "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PAT"}]},
                                         "reference": {"reference": f"Patient/{pid}"}}],
                              "data": [{"meaning": "related", "reference": {"reference": f"Claim/{claim}"}}]})
        cases.append({"patient": pid, "prac": prac, "doc": doc, "binary": binary})

    statements = [0]
    db = app.state.db
    for engine in {db.engine, db._autocommit}:
        event.listen(engine, "before_cursor_execute", lambda *a, **k: statements.__setitem__(0, statements[0] + 1))

    scenarios = {
        "system": [system] * len(cases),
        "handler": [client("user/*.rs", f"Practitioner/{c['prac']}") for c in cases],
        "other": [client("user/*.rs", f"Practitioner/{new_id('prac')}") for _ in cases],
    }
    kinds = {
        "search": lambda c: f"/fhir/DocumentReference?subject=Patient/{c['patient']}&_count=20",
        "read": lambda c: f"/fhir/DocumentReference/{c['doc']}",
        "binary": lambda c: f"/fhir/Binary?_id={c['binary']}",
    }
    lat: dict[tuple[str, str], list[float]] = {}
    sql: dict[tuple[str, str], int] = {}
    for rep in range(args.reps + 1):
        for kind, path in kinds.items():
            for i in range(args.n):
                c = cases[i % len(cases)]
                for name, cs in scenarios.items():
                    before = statements[0]
                    t0 = time.perf_counter()
                    cs[i % len(cases)].get(path(c))
                    dt = time.perf_counter() - t0
                    if rep:
                        lat.setdefault((name, kind), []).append(dt)
                        sql[(name, kind)] = sql.get((name, kind), 0) + statements[0] - before
    print(f"bench_case_handlers: {args.cases} cases, {args.n} requests x {args.reps} reps, {'PostgreSQL' if args.pg_url else 'SQLite'}; "
          "in-process ASGI, interleaved; machine shared (loaded)")
    print(f"{'who':<9}{'kind':<8}{'p50 ms':>8}{'mean ms':>9}{'vs system':>11}{'SQL/req':>9}")
    for kind in kinds:
        for name in scenarios:
            xs = lat[(name, kind)]
            ratio = statistics.mean(lat[("system", kind)]) / statistics.mean(xs)
            print(f"{name:<9}{kind:<8}{statistics.median(xs) * 1000:>8.2f}{statistics.mean(xs) * 1000:>9.2f}{ratio:>11.2f}{sql[(name, kind)] / len(xs):>9.1f}")


if __name__ == "__main__":
    main()
