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
included, the same for all). It prints, per case and request kind, the median of --reps runs of
--n requests: requests/s, mean ms, the ratio to `off` (target from issue 13: >= 0.60), and the
number of SQL statements per request (the acting-for lookups show up here).

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
    app_off = build_app(Settings(**common, auth="off"), ) if "auth" in Settings.model_fields else None
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
    if app_off is not None:
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

    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for rep in range(args.reps + 1):
        for kind in ("read", "search"):
            for name in scenarios:
                cs = clients[name]
                statements[0] = 0
                t0 = time.perf_counter()
                for i in range(args.n):
                    f = fams[i % len(fams)]
                    cs[i % len(fams)].get(requests_for(name, f)[kind])
                dt = time.perf_counter() - t0
                if rep:  # the first round warms up
                    results.setdefault((name, kind), []).append((args.n / dt, statements[0] / args.n))

    print(f"bench_consent: {args.families} families, {args.n} requests x {args.reps} reps, database {'PostgreSQL' if args.pg_url else 'SQLite'}; in-process ASGI (TestClient); machine shared (loaded)")
    print(f"{'case':<10}{'kind':<8}{'req/s':>9}{'ms/req':>9}{'vs off':>8}{'vs system':>11}{'SQL/req':>9}")
    for kind in ("read", "search"):
        base_off = statistics.median(x for x, _ in results[("off", kind)]) if ("off", kind) in results else None
        base_sys = statistics.median(x for x, _ in results[("system", kind)])
        for name in scenarios:
            rps = statistics.median(x for x, _ in results[(name, kind)])
            sql = statistics.median(y for _, y in results[(name, kind)])
            off = f"{rps / base_off:.2f}" if base_off else "-"
            print(f"{name:<10}{kind:<8}{rps:>9.0f}{1000 / rps:>9.2f}{off:>8}{rps / base_sys:>11.2f}{sql:>9.1f}")
    for cs in clients.values():
        for c in cs:
            c.close()
    system.close()


if __name__ == "__main__":
    main()
