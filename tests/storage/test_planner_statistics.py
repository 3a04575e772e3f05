"""PostgreSQL: a bulk load refreshes the planner statistics of the tables it filled
(storage.planner_statistics), instead of leaving searches for up to a minute (autovacuum's
next round) with statistics from when the tables were empty. Measured before: a patient's
Observations right after loading 2,000 took 7.6 s (a nested loop over every Observation)
instead of 1 ms."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from fhir_server.storage import planner_statistics


def _bundle(n_obs: int) -> dict:
    entries = [{"fullUrl": "urn:uuid:p", "request": {"method": "POST", "url": "Patient"},
                "resource": {"resourceType": "Patient", "name": [{"family": "Stat"}]}}]
    entries += [{"request": {"method": "POST", "url": "Observation"},
                 "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                              "subject": {"reference": "urn:uuid:p"}}} for _ in range(n_obs)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_a_bulk_load_refreshes_the_statistics_of_the_tables_it_filled(tmp_path):
    from tests.operations.test_export import Server

    server = Server(tmp_path)
    try:
        if server.db.dialect != "postgresql":
            pytest.skip("PostgreSQL's planner statistics (SQLite has no autovacuum to wait for)")
        engine = server.db.engine
        with engine.connect() as conn:
            conn.execute(text("ALTER TABLE resources SET (autovacuum_enabled = false)"))
            conn.execute(text("ALTER TABLE idx_reference SET (autovacuum_enabled = false)"))
            conn.commit()
        for _ in range(3):
            r = server.client.post("/fhir", json=_bundle(500))
            assert r.status_code == 200, r.text[:300]
        planner_statistics.wait_idle(engine)
        with engine.connect() as conn:
            counted = dict(conn.execute(text("SELECT relname, reltuples FROM pg_class WHERE oid IN "
                                             "(to_regclass('resources'), to_regclass('idx_reference'))")).all())
            pid = conn.execute(text("SELECT target_id FROM idx_reference WHERE param = 'subject' LIMIT 1")).scalar()
            plan = conn.execute(text("EXPLAIN (FORMAT JSON) SELECT pk FROM resources WHERE res_type = 'Observation' AND pk IN "
                                     "(SELECT res_pk FROM idx_reference WHERE res_type = 'Observation' AND param = 'subject' "
                                     "AND target_id = :p)"), {"p": pid}).scalar()
        assert counted["resources"] >= 1000 and counted["idx_reference"] >= 1000, counted  # analyzed after the load
        assert "Nested Loop Semi Join" not in str(plan) or "Hash" in str(plan), plan
        # the first 1,000 rows into a table looked; later bulk loads look again only once it has grown by half
        tracker = planner_statistics._trackers[engine]
        assert tracker.due_at["resources"] >= planner_statistics.GROWTH * 1000
    finally:
        server.drop()


def test_growth_below_half_of_a_large_table_runs_no_analyze(monkeypatch):
    """A look at a table that has not grown by half is a pg_class read, not an ANALYZE; its
    rows still count towards the next look."""
    statements = []

    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def execute(self, stmt, params=None):
            statements.append(str(stmt))

            class R:
                def scalar(self_inner):
                    return 1_000_000.0
            return R()

        def commit(self):
            pass

    class Engine:
        def connect(self):
            return Conn()

    engine = Engine()
    planner_statistics.note_inserted(engine, {"idx_token": 5000})
    planner_statistics.wait_idle(engine)
    assert not any("ANALYZE" in s for s in statements) and statements
    tracker = planner_statistics._trackers[engine]
    assert tracker.inserted["idx_token"] == 5000 and tracker.due_at["idx_token"] == 500_000
    statements.clear()
    planner_statistics.note_inserted(engine, {"idx_token": 5000})  # 10,000 < 500,000: no look at all
    planner_statistics.wait_idle(engine)
    assert statements == []
