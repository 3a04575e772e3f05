"""PostgreSQL's planner knows that a resource type, a search parameter and a system go together
(migration 0022: CREATE STATISTICS on the search-index tables). Without it the planner
multiplied the three columns' frequencies as if independent, estimated one Patient identifier
row of a system where there were thousands, and chose the index without the code
(docs/search-performance.md)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text


def _postgres_only(app) -> None:
    if app.state.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner statistics (SQLite has no multivariate statistics)")


def test_the_statistics_exist_with_their_target(app):
    _postgres_only(app)
    from importlib import import_module

    wanted = import_module("fhir_server.storage.migrations.versions.0022_search_index_statistics")
    with app.state.db.engine.connect() as conn:
        found = dict(conn.execute(text("SELECT stxname, stxstattarget FROM pg_statistic_ext")).all())
    for name, _table, _columns in wanted.STATISTICS:
        assert found.get(name) == wanted.TARGET, name


def test_a_type_parameter_and_system_are_estimated_together(client, app):
    _postgres_only(app)
    system = f"urn:test:statistics:{uuid.uuid4().hex}"
    n = 400
    for start in range(0, n, 100):
        entries = [{"request": {"method": "POST", "url": "Patient"},
                    "resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": f"v{i}"}]}}
                   for i in range(start, start + 100)]
        r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert r.status_code == 200, r.text[:300]
    with app.state.db.engine.begin() as conn:
        conn.execute(text("ANALYZE idx_token"))
        plan = conn.execute(text("EXPLAIN (FORMAT JSON) SELECT res_pk FROM idx_token "
                                 "WHERE res_type = 'Patient' AND param = 'identifier' AND system = :s"), {"s": system}).scalar()
        one = conn.execute(text("EXPLAIN (FORMAT JSON) SELECT res_pk FROM idx_token WHERE res_type = 'Patient' "
                                "AND param = 'identifier' AND system = :s AND code = 'v7'"), {"s": system}).scalar()
    estimated = plan[0]["Plan"]["Plan Rows"]
    assert n / 2 <= estimated <= n * 2, estimated  # independent guesses gave a handful
    assert "ix_idx_token_code_system" in str(one)  # one identifier: the index with the code


def test_a_fresh_database_leaves_empty_index_tables_to_autovacuum(tmp_path):
    """Migration 0022 analyzes only the index tables that hold rows. An empty table analyzed
    at creation stayed "analyzed, 0 rows" after a bulk load until autovacuum's next look, and
    the search right after the load was planned as if the reference index were empty (8 s
    instead of 1 ms, bench_protected.py on a fresh database). pg_class.reltuples: -1 = never
    analyzed (PostgreSQL 14+)."""
    from sqlalchemy import create_engine

    from fhir_server.storage.migrate import upgrade
    from tests.operations.test_export import fresh_database_url

    url, drop = fresh_database_url(tmp_path)
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL's planner statistics")
    engine = create_engine(url)
    try:
        upgrade(engine, "0021_compact_access_log")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO idx_token (res_pk, res_type, param, system, code) VALUES (1, 'Patient', 'identifier', 'urn:s', 'v')"))
        upgrade(engine)
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT relname, reltuples FROM pg_class WHERE oid IN "
                                          "(to_regclass('idx_token'), to_regclass('idx_reference'), to_regclass('idx_date'))")).all())
    finally:
        engine.dispose()
        drop()
    assert rows["idx_token"] == 1  # held a row: analyzed, its new statistics built
    assert rows["idx_reference"] == -1 and rows["idx_date"] == -1  # empty: left to autovacuum
