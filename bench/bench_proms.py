"""What checking and scoring a PHQ-9 response costs per write, and what the change feed costs.

In-process (no HTTP), one transaction per resource, on a throw-away database:
  A. a completed PHQ-9 QuestionnaireResponse (write rule + score Observation + feed rows)
  B. the same response with the Questionnaire unknown to the server (no check, no score; feed row)
  C. a plain Observation of similar size (feed row only)
Prints median microseconds per write over rounds and the ratios A/B and A/C.

  .venv/bin/python bench/bench_proms.py [--n 300] [--rounds 5] [--database-url postgresql+psycopg://.../fhir_issue16_bench]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
    if url.startswith("postgresql"):
        from benchlib import recreate_pg_database

        recreate_pg_database(url)
    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings
    from fhir_server.rest import interactions as ix
    from fhir_server.rest.context import RequestContext

    app = build_app(Settings(database_url=url, run_background_jobs=False, export_dir=tempfile.mkdtemp()))
    db = app.state.db
    ctx = RequestContext(base_url="")
    q = orjson.loads((Path(__file__).resolve().parents[1] / "resources/questionnaires/phq-9.json").read_bytes())
    scored = [i for i in q["item"] if i.get("answerOption") and i["answerOption"][0].get("extension")]

    def response(canonical: str) -> dict:
        return {"resourceType": "QuestionnaireResponse", "questionnaire": canonical, "status": "completed",
                "subject": {"reference": "Patient/bench"}, "authored": "2024-06-03T09:00:00Z",
                "item": [{"linkId": i["linkId"], "answer": [{"valueCoding": {"system": "http://loinc.org", "code": "LA6569-3"}}]} for i in scored]}

    cases = {
        "A completed PHQ-9 (check+score+feed)": ("QuestionnaireResponse", response(q["url"])),
        "B unknown Questionnaire (feed only)": ("QuestionnaireResponse", response("http://example.org/unknown-" + uuid.uuid4().hex)),
        "C plain Observation (feed only)": ("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x" * 900}}),
    }
    results: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, (rtype, body) in cases.items():
            raw = orjson.dumps(body)
            t0 = time.perf_counter()
            for _ in range(args.n):
                with db.write() as conn:
                    ix.create(conn, ctx, rtype, ix.ParsedResource.from_bytes(raw))
            results[name].append((time.perf_counter() - t0) / args.n * 1e6)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"database: {db.dialect}, {args.n} writes x {args.rounds} rounds (median us/write)")
    for k, v in med.items():
        print(f"  {k:42s} {v:8.0f}")
    names = list(med)
    print(f"  ratio A/B (check + score) {med[names[0]] / med[names[1]]:.2f}; A/C {med[names[0]] / med[names[2]]:.2f}")
    db.dispose()


if __name__ == "__main__":
    main()
