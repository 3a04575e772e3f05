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
