"""Subscriptions: events delivered per second, and what subscriptions cost a write.

1. Delivery: one subscription, N committed events in the outbox, a local HTTP
   receiver (keep-alive, answers 200 at once); times the delivery worker
   (`Deliverer.run_once`, the loop every server process runs) until all are sent.
   Shown for an R4 rest-hook (one request per event), a topic-based one with
   id-only payload (one Bundle per event), and the same with max-count 20; and an
   R4 rest-hook on Observations whose owner holds a patient/ scope, next to the same
   subscription owned by a system principal (the per-version reach check, queued and
   re-checked at delivery, is the difference).
2. Write cost: median time of a single-resource create (Patient, in its own
   transaction, in process) with the subscriptions engine absent, and with 0, 10
   and 100 active subscriptions on other resource types (Observation, Task,
   Appointment). Subscriptions are indexed by resource type, so a Patient write
   only probes the index.

    .venv/bin/python bench/bench_subscriptions.py
    .venv/bin/python bench/bench_subscriptions.py --pg-url postgresql+psycopg://postgres@127.0.0.1:55432/fhir_issue17_bench

The PostgreSQL database in --pg-url is dropped and recreated.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchlib import recreate_pg_database

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "http://fhir-server.example.org/SubscriptionTopic/task-status-changed"


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        Sink.count += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    do_PUT = do_POST

    def log_message(self, *args):
        pass


def build(url: str):
    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings
    from fhir_server.storage.database import Database

    settings = Settings(database_url=url, run_background_jobs=False)
    db = Database(url)
    build_app(settings, db)
    return settings, db


def ctx(principal=None):
    from fhir_server.rest.context import RequestContext

    if principal is None:
        return RequestContext(base_url="http://bench/fhir")
    return RequestContext(base_url="http://bench/fhir", principal=principal)


def create(db, resource: dict, principal=None) -> str:
    from fhir_server.rest import interactions as ix

    parsed = ix.ParsedResource.from_preserving(dict(resource))
    ix.prevalidate(resource["resourceType"], parsed)
    with db.write() as conn:
        return ix.create(conn, ctx(principal), resource["resourceType"], parsed).res_id


def owner_principal(kind: str, patient: str):
    from fhir_server.security.authz import Principal

    if kind == "system":
        return Principal(subject="bench-system", scopes=frozenset({"system/*.*"}))
    return Principal(subject="bench-portal", scopes=frozenset({"system/Subscription.cruds", "patient/Observation.rs"}),
                     patient=patient, fhir_user="Practitioner/bench")


def r4_sub(criteria: str, endpoint: str) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": endpoint}}


def topic_sub(endpoint: str, owner: str, max_count: int = 1) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": TOPIC,
            "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f"Task?owner={owner}"}]},
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}]},
                        "extension": [{"url": BACKPORT + "backport-max-count", "valuePositiveInt": max_count}]}}


def delivery(settings, db, endpoint: str, n: int) -> list[tuple[str, float]]:
    from fhir_server.rest import interactions as ix
    from fhir_server.subscriptions.delivery import Deliverer

    out = []
    cases = [("R4 rest-hook, no payload", None, 1), ("topic, id-only, max-count 1", "t1", 1),
             ("topic, id-only, max-count 20", "t20", 20), ("R4 Observation, system owner", "system", 1),
             ("R4 Observation, patient/ owner", "patient", 1)]
    for label, owner_tag, max_count in cases:
        if owner_tag in ("system", "patient"):
            pid = create(db, {"resourceType": "Patient", "name": [{"family": "Owner"}]})
            code = f"b{time.monotonic_ns()}"
            sub_id = create(db, r4_sub(f"Observation?code=http://loinc.org|{code}", endpoint), owner_principal(owner_tag, pid))
            make = lambda: {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},  # noqa: E731
                            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}}
        elif owner_tag is None:
            family = f"Bench{time.monotonic_ns()}"
            sub_id = create(db, r4_sub(f"Patient?family={family}", endpoint))
            make = lambda: {"resourceType": "Patient", "name": [{"family": family}]}  # noqa: E731
        else:
            owner = f"Practitioner/{owner_tag}-{time.monotonic_ns()}"
            sub_id = create(db, topic_sub(endpoint, owner, max_count))
            make = lambda: {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}}  # noqa: E731
        Deliverer(db, settings).run_once()  # the handshake
        for _ in range(n):
            create(db, make())
        deliverer = Deliverer(db, settings)
        t0 = time.perf_counter()
        sent = 0
        while sent < n:
            got = deliverer.run_once()
            if not got:
                break
            sent += got
        elapsed = time.perf_counter() - t0
        out.append((label, sent / elapsed))
        with db.write() as conn:
            ix.delete(conn, ctx(), "Subscription", sub_id)
    return out


def write_cost(settings, db, endpoint: str, writes: int, rounds: int) -> list[tuple[str, float]]:
    from fhir_server import events
    from fhir_server.subscriptions import matching

    patient = {"resourceType": "Patient", "name": [{"family": "Cost", "given": ["Write"]}], "gender": "female",
               "birthDate": "1980-01-01"}

    def per_write() -> float:
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(writes):
                create(db, patient)
            times.append((time.perf_counter() - t0) / writes)
        return statistics.median(times)

    for _ in range(writes):  # warm up
        create(db, patient)
    out = []
    events.unsubscribe(matching.on_change)
    out.append(("engine absent", per_write()))
    events.subscribe(matching.on_change)
    made = 0
    types = ["Observation?code=http://loinc.org|{}", "Task?owner=Practitioner/{}", "Appointment?patient=Patient/{}"]
    for target in (0, 10, 100):
        while made < target:
            create(db, r4_sub(types[made % 3].format(made), endpoint))
            made += 1
        out.append((f"{target} subscriptions on other types", per_write()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg-url", help="also run on this PostgreSQL database (dropped and recreated)")
    ap.add_argument("--events", type=int, default=500, help="events per delivery case")
    ap.add_argument("--writes", type=int, default=200, help="creates per write-cost round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per write-cost case (median reported)")
    args = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/hook"
    tmp = Path(tempfile.mkdtemp())
    targets = [("sqlite", f"sqlite:///{tmp / 'subs.sqlite'}")]
    if args.pg_url:
        recreate_pg_database(args.pg_url)
        targets.append(("postgresql", args.pg_url))
    for name, url in targets:
        settings, db = build(url)
        print(f"== {name}")
        for label, rate in delivery(settings, db, endpoint, args.events):
            print(f"delivery  {label:34s} {rate:8.0f} events/s")
        costs = write_cost(settings, db, endpoint, args.writes, args.rounds)
        base = costs[1][1]
        for label, t in costs:
            print(f"write     {label:34s} {t * 1000:8.3f} ms/create  ({t / base:5.2f} x the 0-subscription cost)")
        db.dispose()
    server.shutdown()


if __name__ == "__main__":
    main()
