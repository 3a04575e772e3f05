"""`fhir-server load`: Synthea bundles load, counts match per type, re-runs skip.

The suite loads a spread of 20 of the 100 bundles (every fifth, by name) on each backend:
the loader's path is the same for every bundle, and the whole set costs 60-85 s per
backend, a fifth of CI's budget. `bench/bench_ingest.py` loads all of them and reports any
bundle refused."""

from __future__ import annotations

import collections
import json
import os

import pytest
from sqlalchemy import func, select

from tests.conftest import SHARED_DATA
from tests.isolated_db import isolated_database_url

SYNTHEA = SHARED_DATA / "synthea-r4"


@pytest.fixture
def fresh_db_url(tmp_path, database_url):
    """An empty database of the session's kind (a schema of its own on PostgreSQL)."""
    with isolated_database_url(database_url, tmp_path / "load.sqlite", "load") as url:
        yield url


def _counts(url: str) -> dict[str, int]:
    from fhir_server.storage.database import Database
    from fhir_server.storage.schema import resources

    db = Database(url)
    with db.read() as conn:
        rows = conn.execute(
            select(resources.c.res_type, func.count()).where(resources.c.deleted.is_(False)).group_by(resources.c.res_type)
        ).all()
    db.dispose()
    return {t: n for t, n in rows if t != "NamingSystem"}


@pytest.mark.skipif(not SYNTHEA.exists(), reason="../shared/data/synthea-r4 is absent")
def test_load_synthea_counts_per_type_and_resume(fresh_db_url):
    from fhir_server.config import Settings
    from fhir_server.loader import load_paths
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade

    bundles = sorted(SYNTHEA.glob("*.json"))[::5]
    paths = [str(f) for f in bundles]
    expected: collections.Counter = collections.Counter()
    for f in bundles:
        for e in json.loads(f.read_bytes())["entry"]:
            expected[e["resource"]["resourceType"]] += 1

    settings = Settings(database_url=fresh_db_url, run_background_jobs=False)
    db = Database(fresh_db_url)
    upgrade(db.engine)
    db.dispose()
    workers = 2 if os.cpu_count() and os.cpu_count() > 1 else 1
    results = load_paths(settings, paths, workers=workers)
    assert [r for r in results if r.failures] == []
    assert sum(r.resources for r in results) == sum(expected.values())
    assert _counts(fresh_db_url) == dict(expected)

    again = load_paths(settings, paths, workers=1)
    assert all(r.skipped for r in again)
    assert _counts(fresh_db_url) == dict(expected)


def test_load_ndjson_and_single_resource_resumable(tmp_path, fresh_db_url):
    from fhir_server.config import Settings
    from fhir_server.loader import load_paths
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade

    db = Database(fresh_db_url)
    upgrade(db.engine)
    db.dispose()
    nd = tmp_path / "obs.ndjson"
    lines = [json.dumps({"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "t"}}) for i in range(450)]
    lines.insert(100, json.dumps({"resourceType": "Observation", "status": "not-a-status"}))
    nd.write_text("\n".join(lines) + "\n")
    single = tmp_path / "patient.json"
    single.write_text(json.dumps({"resourceType": "Patient", "id": "p-single", "gender": "female"}))
    settings = Settings(database_url=fresh_db_url, run_background_jobs=False)
    results = {r.path: r for r in load_paths(settings, [str(tmp_path)])}
    assert results[str(nd)].resources == 450
    assert len(results[str(nd)].failures) == 1 and "line 101" in results[str(nd)].failures[0]
    assert results[str(single)].resources == 1
    assert _counts(fresh_db_url) == {"Observation": 450, "Patient": 1}
    assert all(r.skipped for r in load_paths(settings, [str(tmp_path)]))


@pytest.mark.skipif(not (SHARED_DATA / "fhir-r4-examples").exists(), reason="../shared/data/fhir-r4-examples is absent")
def test_load_puts_audit_events_into_the_access_log_once(tmp_path, fresh_db_url):
    """AuditEvents are append-only: the loader adds each official example once, under its id,
    to the access log (not as an ordinary resource); a second load of the file changes nothing."""
    from fhir_server.audit.log import read
    from fhir_server.config import Settings
    from fhir_server.loader import load_paths
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade
    from fhir_server.storage.schema import audit_log

    db = Database(fresh_db_url)
    upgrade(db.engine)
    examples = sorted((SHARED_DATA / "fhir-r4-examples").glob("*audit*event*.json"))
    assert len(examples) >= 5
    nd = tmp_path / "events.ndjson"
    docs = [json.loads(p.read_text()) for p in examples]
    nd.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    settings = Settings(database_url=fresh_db_url, run_background_jobs=False)
    for _ in range(2):  # a trailing newline changes the file: the second load reads it again instead of skipping it
        results = load_paths(settings, [str(nd)])
        assert not results[0].failures, results[0].failures
        nd.write_text(nd.read_text() + "\n")
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == len(docs)
        for d in docs:
            assert json.loads(read(conn, d["id"])[2])["agent"] == d["agent"]
    assert "AuditEvent" not in _counts(fresh_db_url)
    db.dispose()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_load_leaves_the_tables_it_filled_analyzed(tmp_path, fresh_db_url, workers):
    """PostgreSQL: `fhir-server load` ends with the planner statistics of the tables it filled
    (storage.planner_statistics.analyze_grown_tables), so the server's first searches are not
    planned as if they were empty. autovacuum is off on those tables here: without the load's
    own ANALYZE their reltuples stays -1 (never analyzed)."""
    from sqlalchemy import text

    from fhir_server.config import Settings
    from fhir_server.loader import load_paths
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade

    db = Database(fresh_db_url)
    upgrade(db.engine)
    if db.dialect != "postgresql":
        db.dispose()
        pytest.skip("PostgreSQL's planner statistics")
    tables = ("resources", "resource_versions", "idx_reference", "idx_token")
    with db.engine.begin() as conn:
        for t in tables:
            conn.execute(text(f"ALTER TABLE {t} SET (autovacuum_enabled = false)"))
    db.dispose()
    for n in range(2):
        entries = [{"fullUrl": "urn:uuid:p", "request": {"method": "POST", "url": "Patient"},
                    "resource": {"resourceType": "Patient", "name": [{"family": f"Load{n}"}]}}]
        entries += [{"request": {"method": "POST", "url": "Observation"},
                     "resource": {"resourceType": "Observation", "status": "final", "subject": {"reference": "urn:uuid:p"},
                                  "code": {"coding": [{"system": "http://loinc.org", "code": f"{i % 50}-{n}"}]}}}
                    for i in range(700)]
        (tmp_path / f"bundle{n}.json").write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    settings = Settings(database_url=fresh_db_url, run_background_jobs=False)
    results = load_paths(settings, [str(tmp_path)], workers=workers)
    assert sum(r.resources for r in results) == 1402
    db = Database(fresh_db_url)
    with db.read() as conn:
        counted = dict(conn.execute(text("SELECT relname, reltuples FROM pg_class WHERE oid = ANY(ARRAY["
                                         + ", ".join(f"to_regclass('{t}')" for t in tables) + "])")).all())
    db.dispose()
    assert all(counted[t] >= 1000 for t in tables), counted
