#!/usr/bin/env python3
"""What the acting-for rules cost per request: read-by-id and a portal search, in process.

One SQLite (or --pg-url PostgreSQL) database with --families families: a Swedish child under
13 with --qr QuestionnaireResponses, a Danish 16-year-old with two claims and a per-case
consent for one parent. The same requests run, interleaved, as

  off        protection off (FHIR_SERVER_AUTH=off): no token, no policy;
  system     a system/*.* token: scopes only, no acting-for lookups;
  self       the child's own patient token (fhirUser = patient: no lookups);
  guardian   the parent's token acting for the child (SMART patient context): guardian rule;
  case       the parent acting for the 16-year-old under a per-case consent: read the claim,
             search the claim's DocumentReferences (criteria from the consent).

Each request goes through the whole ASGI stack (FastAPI TestClient; the client's own cost is
included, the same for all); the cases take turns request by request, so that the load of a
shared machine falls on all of them alike. It prints, per case and request kind, over --reps
runs of --n requests: median and mean latency, requests/s (1/mean), the ratio to `off` (issue 13:
>= 0.60) and to `system`, and the SQL statements per request (the acting-for lookups show here).

    .venv/bin/python bench/bench_consent.py --n 300 --reps 5

It prints figures; it is not a test and asserts nothing.
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


def _key() -> str:
    from joserfc.jwk import RSAKey

    fd, path = tempfile.mkstemp(prefix="bench-consent-key-", suffix=".pem")
    with os.fdopen(fd, "wb") as fh:
        fh.write(RSAKey.generate_key(2048, private=True).as_pem(private=True))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="requests per run")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--families", type=int, default=50)
    ap.add_argument("--qr", type=int, default=10, help="QuestionnaireResponses per child")
    ap.add_argument("--pg-url", default=None)
    args = ap.parse_args()

    os.environ["FHIR_SERVER_AUTH_SIGNING_KEY_FILE"] = _key()
    os.environ["FHIR_SERVER_AUTH_BASE_URL"] = AUDIENCE
    os.environ["FHIR_SERVER_TERMINOLOGY_LOAD"] = "false"
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from fhir_server.auth.keys import load_pem
    from fhir_server.auth.tokens import issue_access_token
    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings
    from fhir_server.storage.database import Database

    tmp = Path(tempfile.mkdtemp(prefix="bench-consent-"))
    url = args.pg_url or f"sqlite:///{tmp / 'fhir.sqlite'}"
    if args.pg_url:
        from benchlib import recreate_pg_database

        recreate_pg_database(args.pg_url)
    common = dict(database_url=url, export_dir=str(tmp / "export"), blob_dir=str(tmp / "blobs"), run_background_jobs=False, terminology_load=False)
    app = build_app(Settings(**common))
    db: Database = app.state.db
    app_off = build_app(Settings(**common, auth="off"))
    key = load_pem(os.environ["FHIR_SERVER_AUTH_SIGNING_KEY_FILE"])

    def token(scope: str, patient: str | None = None, fhir_user: str | None = None) -> str:
        return issue_access_token(key, AUDIENCE, AUDIENCE, scope, "bench", "bench", 36000, patient, fhir_user)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.security.family import SYSTEMS, consent, national_number, new_id, put, proxy_provision, related_person

    system = TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token('system/*.*')}"})
    fams = []
    for i in range(args.families):
        child, teen, parent = new_id("child"), new_id("teen"), new_id("parent")
        p_no = national_number("SE", date(1980, 1, 1 + i % 28))
        put(system, {"resourceType": "Patient", "id": parent, "identifier": [{"system": SYSTEMS["SE"], "value": p_no}]})
        put(system, {"resourceType": "Patient", "id": child, "identifier": [{"system": SYSTEMS["SE"], "value": national_number("SE", date(2018, 2, 1 + i % 28))}]})
        put(system, {"resourceType": "Patient", "id": teen, "birthDate": "2010-01-01", "address": [{"country": "DK"}]})
        related_person(system, child, ["MTH"], identifier=(SYSTEMS["SE"], p_no))
        related_person(system, teen, ["MTH"], identifier=(SYSTEMS["SE"], p_no))
        qrs = []
        for _ in range(args.qr):
            qr = new_id("qr")
            put(system, {"resourceType": "QuestionnaireResponse", "id": qr, "status": "completed", "subject": {"reference": f"Patient/{child}"}})
            qrs.append(qr)
        claims = []
        for _ in range(2):
            claim, doc = new_id("claim"), new_id("doc")
            put(system, {"resourceType": "Claim", "id": claim, "status": "active", "use": "claim", "patient": {"reference": f"Patient/{teen}"}, "created": "2026-01-01",
                         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
                         "provider": {"display": "Clinic"}, "priority": {"coding": [{"code": "normal"}]},
                         "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Policy"}}]})
            put(system, {"resourceType": "DocumentReference", "id": doc, "status": "current", "subject": {"reference": f"Patient/{teen}"},
                         "content": [{"attachment": {"contentType": "text/plain", "data": "aGVq"}}], "context": {"related": [{"reference": f"Claim/{claim}"}]}})
            claims.append(claim)
        consent(system, teen, proxy_provision(f"Patient/{parent}", data=[f"Claim/{claims[0]}"]))
        fams.append({"child": child, "teen": teen, "parent": parent, "qrs": qrs, "claim": claims[0]})

    statements = [0]

    def count(*_a, **_k):
        statements[0] += 1

    for engine in {db.engine, db._autocommit}:
        event.listen(engine, "before_cursor_execute", count)

    def client(tok: str | None, a=app) -> TestClient:
        return TestClient(a, base_url="http://testserver", headers={"Authorization": f"Bearer {tok}"} if tok else {})

    f0 = fams[0]
    scenarios = {
        "system": lambda f: client(token("system/*.*")),
        "self": lambda f: client(token("patient/*.rs", f["child"], f"Patient/{f['child']}")),
        "guardian": lambda f: client(token("patient/*.rs", f["child"], f"Patient/{f['parent']}")),
        "case": lambda f: client(token("patient/*.rs", f["teen"], f"Patient/{f['parent']}")),
    }
    if True:
        for engine in {app_off.state.db.engine, app_off.state.db._autocommit}:
            event.listen(engine, "before_cursor_execute", count)
        scenarios = {"off": lambda f: client(None, app_off), **scenarios}

    def requests_for(name: str, f: dict) -> dict[str, str]:
        if name == "case":
            return {"read": f"/fhir/Claim/{f['claim']}", "search": f"/fhir/DocumentReference?subject=Patient/{f['teen']}&_count=20"}
        return {"read": f"/fhir/QuestionnaireResponse/{f['qrs'][0]}", "search": f"/fhir/QuestionnaireResponse?subject=Patient/{f['child']}&_count=20"}

    clients = {name: [make(f) for f in fams] for name, make in scenarios.items()}
    # sanity: every scenario sees what it should
    for name in scenarios:
        for kind, path in requests_for(name, f0).items():
            r = clients[name][0].get(path)
            assert r.status_code == 200, (name, kind, r.status_code, r.text[:300])

    # Interleaved request by request (each scenario gets the same share of the machine's noise);
    # per request the latency, per run the SQL statements.
    lat: dict[tuple[str, str], list[float]] = {}
    sql: dict[tuple[str, str], int] = {}
    for rep in range(args.reps + 1):
        for kind in ("read", "search"):
            for i in range(args.n):
                f = fams[i % len(fams)]
                for name in scenarios:
                    before = statements[0]
                    t0 = time.perf_counter()
                    clients[name][i % len(fams)].get(requests_for(name, f)[kind])
                    dt = time.perf_counter() - t0
                    if rep:  # the first round warms up
                        lat.setdefault((name, kind), []).append(dt)
                        sql[(name, kind)] = sql.get((name, kind), 0) + statements[0] - before

    print(f"bench_consent: {args.families} families, {args.n} requests x {args.reps} reps per case, database {'PostgreSQL' if args.pg_url else 'SQLite'}; "
          "in-process ASGI (TestClient), requests interleaved across cases; machine shared with other engineers (loaded)")
    print(f"{'case':<10}{'kind':<8}{'p50 ms':>8}{'mean ms':>9}{'req/s':>8}{'vs off':>8}{'vs system':>11}{'SQL/req':>9}")
    for kind in ("read", "search"):
        def rate(name):
            return 1 / statistics.mean(lat[(name, kind)])
        for name in scenarios:
            xs = lat[(name, kind)]
            off = f"{rate(name) / rate('off'):.2f}" if ("off", kind) in lat else "-"
            print(f"{name:<10}{kind:<8}{statistics.median(xs) * 1000:>8.2f}{statistics.mean(xs) * 1000:>9.2f}{rate(name):>8.0f}{off:>8}"
                  f"{rate(name) / rate('system'):>11.2f}{sql[(name, kind)] / len(xs):>9.1f}")
    for cs in clients.values():
        for c in cs:
            c.close()
    system.close()


if __name__ == "__main__":
    main()
