"""The PostgreSQL flush sends a write's buffered rows as one statement."""

from fhir_server.storage.repository import _combined_insert_sql


def test_one_insert_is_plain():
    assert _combined_insert_sql((("idx_date", ("low", "high"), 2),)) == (
        "INSERT INTO idx_date (low, high) VALUES ($1,$2),($3,$4)")


def test_inserts_chain_as_ctes_numbered_on():
    sql = _combined_insert_sql((("resources", ("pk", "content"), 1), ("idx_token", ("code",), 2), ("idx_uri", ("uri",), 1)))
    assert sql == ("WITH w0 AS (INSERT INTO resources (pk, content) VALUES ($1,$2)), "
                   "w1 AS (INSERT INTO idx_token (code) VALUES ($3),($4)) "
                   "INSERT INTO idx_uri (uri) VALUES ($5)")
