"""Fixtures for search tests: a throwaway database per test module.

The database URL comes from FHIR_SERVER_DATABASE_URL when set (so the same
tests run on PostgreSQL), else a temp SQLite file.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import orjson
import pytest
from sqlalchemy import create_engine, insert, select, text, update

from fhir_server.search.engine import SearchRequest, execute_search, find_matches
from fhir_server.search.indexer import delete_index, index_resource
from fhir_server.storage import schema
from fhir_server.storage.db import make_engine

BASE = "http://test.local/fhir"


class Db:
    """Tiny store: insert/update/delete resources and index them, run searches."""

    def __init__(self, engine):
        self.engine = engine
        self.n = 0

    def put(self, resource: dict, last_updated: str | None = None) -> dict:
        """Create or overwrite (version +1) and re-index, like the REST layer does."""
        self.n += 1
        rtype, rid = resource["resourceType"], resource["id"]
        lu = datetime.fromisoformat(last_updated) if last_updated else datetime(2024, 1, 1, tzinfo=timezone.utc)
        if lu.tzinfo is None:
            lu = lu.replace(tzinfo=timezone.utc)
        resource = dict(resource)
        resource.setdefault("meta", {})
        resource["meta"] = dict(resource["meta"], lastUpdated=lu.isoformat())
        content = orjson.dumps(resource)
        with self.engine.begin() as conn:
            row = conn.execute(select(schema.resources.c.pk, schema.resources.c.version_id).where(
                schema.resources.c.res_type == rtype, schema.resources.c.res_id == rid)).first()
            if row:
                conn.execute(update(schema.resources).where(schema.resources.c.pk == row.pk).values(
                    version_id=row.version_id + 1, last_updated=lu, deleted=False, content=content))
                delete_index(conn, row.pk)
                pk = row.pk
            else:
                pk = conn.execute(insert(schema.resources).values(
                    res_type=rtype, res_id=rid, version_id=1, last_updated=lu, deleted=False,
                    content=content)).inserted_primary_key[0]
            index_resource(conn, pk, rtype, resource)
        return resource

    def remove(self, rtype: str, rid: str) -> None:
        with self.engine.begin() as conn:
            pk = conn.execute(select(schema.resources.c.pk).where(
                schema.resources.c.res_type == rtype, schema.resources.c.res_id == rid)).scalar_one()
            conn.execute(update(schema.resources).where(schema.resources.c.pk == pk).values(deleted=True))
            delete_index(conn, pk)

    def bundle(self, rtype: str | None, query: str | list[tuple[str, str]] = "", **kw) -> dict:
        if isinstance(query, str):
            from urllib.parse import parse_qsl

            params = parse_qsl(query, keep_blank_values=True)
        else:
            params = query
        with self.engine.connect() as conn:
            return orjson.loads(execute_search(conn, SearchRequest(rtype, params, BASE, **kw)))

    def ids(self, rtype: str | None, query: str | list = "", **kw) -> list[str]:
        b = self.bundle(rtype, query, **kw)
        return [e["resource"]["id"] for e in b.get("entry", []) if e["search"]["mode"] == "match"]

    def set_ids(self, rtype, query="", **kw) -> set[str]:
        return set(self.ids(rtype, query, **kw))

    def matches(self, rtype, params, limit=2):
        with self.engine.connect() as conn:
            return find_matches(conn, rtype, params, limit)


PG_SCHEMA = "search_tests"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    url = os.environ.get("FHIR_SERVER_DATABASE_URL")
    if url and url.startswith("postgresql"):
        # A private schema, so the session database other test packages use is left alone.
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        with create_engine(url).begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
        engine = create_engine(url, connect_args={"options": f"-c search_path={PG_SCHEMA}"})
    else:
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('search')}/search.sqlite")
    schema.metadata.create_all(engine)
    yield Db(engine)
    schema.metadata.drop_all(engine)
    engine.dispose()
    if url and url.startswith("postgresql"):
        with create_engine(url).begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
