"""SQLite keeps planner statistics as data arrives, so a patient's search is driven by
the patient's index rows, not by a walk over every resource of the type."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def sqlite_app(database_url, settings, tmp_path, auth_headers):
    if database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL keeps its own statistics (autovacuum's ANALYZE)")
    from fhir_server.bootstrap import build_app

    app = build_app(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'stats.sqlite'}"}))
    with TestClient(app, base_url="http://testserver", headers=auth_headers) as client:
        yield app, client
    app.state.db.dispose()


def _plan(db, patient: str) -> str:
    from fhir_server.search.engine import SearchRequest, prepare_search

    req = SearchRequest("Observation", [("patient", patient), ("_count", "10"), ("_sort", "-_lastUpdated")], "http://x/fhir")
    with db.read() as conn:
        prep = prepare_search(conn, req)
        sql = str(prep.page_q.compile(conn, compile_kwargs={"literal_binds": True}))
        return " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))


def test_statistics_follow_the_writes_and_searches_use_them(sqlite_app):
    app, client = sqlite_app
    db = app.state.db
    patients = []
    for i in range(30):
        r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": f"Stat{i}"}]})
        assert r.status_code == 201
        patients.append(r.json()["id"])
    for n in range(90):  # 120 write transactions in all: past the first ANALYZE's threshold
        entries = [{"request": {"method": "POST", "url": "Observation"}, "resource": {
            "resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
            "subject": {"reference": f"Patient/{patients[(n + k) % 30]}"}}} for k in range(20)]
        r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 20
    while db.planner_stats.runs == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert db.planner_stats.runs >= 1, "no ANALYZE ran after 120 write transactions"
    plan = _plan(db, patients[3])
    assert "INTEGER PRIMARY KEY" in plan and "ix_resources_type_updated" not in plan, plan
    r = client.get(f"/fhir/Observation?patient={patients[3]}&_count=10&_sort=-_lastUpdated")
    assert r.status_code == 200 and r.json()["total"] == 60


def test_a_database_with_data_but_no_statistics_is_analyzed_at_start_up(sqlite_app, settings, tmp_path):
    app, client = sqlite_app
    assert client.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
    with app.state.db.engine.connect() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat1")
        conn.commit()
    from fhir_server.bootstrap import build_app

    again = build_app(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'stats.sqlite'}"}))
    try:
        deadline = time.monotonic() + 20
        while again.state.db.planner_stats.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert again.state.db.planner_stats.runs == 1
    finally:
        again.state.db.dispose()
