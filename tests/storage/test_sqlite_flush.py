"""SQLite: buffered rows sent to the driver's executemany (repository._flush_sqlite) must
land exactly as SQLAlchemy's INSERT puts them - every table, column and stored form
(dates as text, booleans as 0/1, bytes) - for resources, their versions, every kind of
search-index row (the access log's rows: tests/audit/test_log_search.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from fhir_server.search.indexer import index_resource
from fhir_server.storage import repository as repo
from fhir_server.storage.database import Database
from fhir_server.storage.migrate import upgrade
from fhir_server.storage.schema import INDEX_TABLES, change_feed, resource_versions, resources

from ..conftest import shared_data

TABLES = [resources, resource_versions, change_feed, *INDEX_TABLES.values()]


def _examples() -> list[dict]:
    folder = shared_data("fhir-r4-examples")
    out = []
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and doc.get("resourceType") and doc["resourceType"] != "Bundle":
            out.append(doc)
    return out


def _write_all(path, docs: list[dict], driver_flush: bool, monkeypatch) -> dict[str, list[tuple]]:
    monkeypatch.setattr(repo, "SQLITE_DRIVER_FLUSH", driver_flush)
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine)
    start = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    try:
        for chunk in range(0, len(docs), 50):
            with db.write() as conn:  # a buffering write transaction, flushed before COMMIT
                for i, doc in enumerate(docs[chunk:chunk + 50], start=chunk):
                    res_type, res_id = doc["resourceType"], f"r{i}"
                    content = json.dumps(doc).encode()
                    when = start + timedelta(seconds=i, microseconds=i * 7)
                    pk = repo.insert_resource(conn, res_type, res_id, 1, when, content, "POST")
                    index_resource(conn, pk, res_type, doc)
                    repo.buffer_rows(conn, change_feed, [{"txid": chunk, "res_type": res_type, "res_id": res_id, "version_id": 1}])
                    if i % 3 == 0:  # a second version, and a deletion
                        repo.write_version(conn, pk, res_type, res_id, 2, when + timedelta(hours=1),
                                           None if i % 2 else content, "DELETE" if i % 2 else "PUT")
        out = {}
        with db.read() as conn:
            for table in TABLES:
                order = ", ".join(c.name for c in table.primary_key.columns)
                out[table.name] = [tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key.columns))]
                # as stored, without SQLAlchemy's types reading them back
                out["raw:" + table.name] = [tuple(row) for row in conn.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY {order}")]
        return out
    finally:
        db.dispose()


def test_driver_flush_stores_what_sqlalchemy_stores(tmp_path, monkeypatch):
    docs = _examples()
    assert len(docs) > 500
    fast = _write_all(tmp_path / "driver.sqlite", docs, True, monkeypatch)
    slow = _write_all(tmp_path / "sqlalchemy.sqlite", docs, False, monkeypatch)
    for table in TABLES:
        for name in (table.name, "raw:" + table.name):
            assert len(fast[name]) == len(slow[name]), name
            assert fast[name] == slow[name], name
    assert len(fast["idx_token"]) > 1000 and len(fast["idx_date"]) > 100 and len(fast["idx_quantity"]) > 10
    assert len(fast["idx_composite"]) > 10 and len(fast["idx_number"]) > 0 and len(fast["idx_uri"]) > 10


def test_stored_forms_as_sqlalchemy_reads_them(tmp_path, monkeypatch):
    """The raw rows read back through SQLAlchemy's types: aware datetimes, booleans, bytes."""
    doc = {"resourceType": "Patient", "active": False, "birthDate": "1970-01-02", "name": [{"family": "Flush"}]}
    rows = _write_all(tmp_path / "forms.sqlite", [doc], True, monkeypatch)
    _pk, res_type, res_id, version, updated, deleted, content = rows["resources"][0]
    assert (res_type, res_id, version, deleted) == ("Patient", "r0", 2, False)
    assert isinstance(updated, datetime) and json.loads(content) == doc
    versions = rows["resource_versions"]
    assert [(v[4], v[6], v[7]) for v in versions[:2]] == [(1, "POST", False), (2, "PUT", False)]
    assert all(isinstance(v[5], datetime) and isinstance(v[8], bytes) for v in versions)
    assert "active" in {r[3] for r in rows["idx_token"]}
    low, high = next(r[5:7] for r in rows["idx_date"] if r[3] == "birthdate")
    assert isinstance(low, datetime) and isinstance(high, datetime) and low < high


@pytest.mark.parametrize("driver_flush", [True, False])
def test_refusals_roll_back_alike(tmp_path, monkeypatch, driver_flush):
    """A constraint the buffered rows break fails the write as before (409), and nothing stays."""
    from fhir_server.storage.database import WriteConflict

    monkeypatch.setattr(repo, "SQLITE_DRIVER_FLUSH", driver_flush)
    db = Database(f"sqlite:///{tmp_path / 'refuse.sqlite'}")
    upgrade(db.engine)
    when = datetime(2024, 5, 1, tzinfo=timezone.utc)
    try:
        with pytest.raises(WriteConflict) as refused:
            with db.write() as conn:
                pk = repo.insert_resource(conn, "Patient", "dup", 1, when, b"{}", "POST")
                # the same version again: uq_versions_res_version refuses it at flush time
                repo.buffer_rows(conn, resource_versions, [{"res_pk": pk, "res_type": "Patient", "res_id": "dup", "version_id": 1,
                                                            "last_updated": when, "method": "POST", "deleted": False, "content": b"{}"}])
        assert refused.value.status == 409
        with db.read() as conn:
            assert conn.execute(select(resources.c.pk)).all() == []
            assert conn.execute(select(resource_versions.c.seq)).all() == []
    finally:
        db.dispose()


@pytest.mark.parametrize("driver_flush", [True, False])
def test_driver_errors_rise_as_sqlalchemy_raises_them(tmp_path, monkeypatch, driver_flush):
    """Callers that catch SQLAlchemy's IntegrityError (the access log's materializer) still do."""
    from sqlalchemy.exc import IntegrityError

    monkeypatch.setattr(repo, "SQLITE_DRIVER_FLUSH", driver_flush)
    db = Database(f"sqlite:///{tmp_path / 'errors.sqlite'}")
    upgrade(db.engine)
    when = datetime(2024, 5, 1, tzinfo=timezone.utc)
    try:
        with db.engine.connect() as conn:
            repo.start_buffering(conn)
            with conn.begin():
                pk = repo.insert_resource(conn, "Patient", "twice", 1, when, b"{}", "POST")
                repo.buffer_rows(conn, resource_versions, [{"res_pk": pk, "res_type": "Patient", "res_id": "twice", "version_id": 1,
                                                            "last_updated": when, "method": "POST", "deleted": False, "content": b"{}"}])
                with pytest.raises(IntegrityError):
                    repo.flush(conn)
                with pytest.raises(IntegrityError):  # the same (type, id) again
                    repo.insert_resource(conn, "Patient", "twice", 1, when, b"{}", "POST")
                conn.rollback()
            repo.discard_buffer(conn)
    finally:
        db.dispose()
