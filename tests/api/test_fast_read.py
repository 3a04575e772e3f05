"""Reads by id answered in front of the router (api/fast_read.py) must be the
same reads the app gives, and leave everything else to the app."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import orjson
import pytest

from fhir_server.api.fast_read import FAST_READER, FastReads
from fhir_server.search.membership import patients_of
from fhir_server.security import authz
from fhir_server.storage.repository import StoredResource

IGNORED = {"date", "x-request-id", "server"}


def _headers(r):
    return {k: v for k, v in r.headers.items() if k not in IGNORED}


@pytest.fixture
def patient(client):
    body = '{"resourceType":"Patient","name":[{"family":"Åström"}],"extension":[{"url":"http://e","valueDecimal":72.50}]}'
    r = client.post("/fhir/Patient", content=body.encode(), headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 201
    return r.json()["id"]


def test_server_opens_a_reader(client, database_url):
    assert client.app_state.get(FAST_READER) is not None


@pytest.mark.parametrize("accept", [None, "application/json", "application/fhir+json", "*/*"])
def test_same_bytes_and_headers_as_the_app(client, patient, accept):
    headers = {"Accept": accept} if accept else {}
    fast = client.get(f"/fhir/Patient/{patient}", headers=headers)
    # `_pretty=false` changes nothing in the answer but takes the read through the router
    routed = client.get(f"/fhir/Patient/{patient}?_pretty=false", headers=headers)
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert _headers(fast) == _headers(routed)
    assert fast.headers["x-request-id"]
    assert b"72.50" in fast.content


def test_reader_sees_new_versions_at_once(client, patient):
    client.put(f"/fhir/Patient/{patient}", json={"resourceType": "Patient", "id": patient, "active": True})
    r = client.get(f"/fhir/Patient/{patient}")
    assert r.headers["etag"] == 'W/"2"' and r.json()["active"] is True
    client.delete(f"/fhir/Patient/{patient}")
    gone = client.get(f"/fhir/Patient/{patient}")
    assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"


def test_errors_and_refusals_are_the_apps(client, patient):
    assert client.get("/fhir/Patient/no-such-id").status_code == 404
    assert client.get(f"/fhir/Patient/{patient}", headers={"Accept": "application/fhir+xml"}).status_code == 406
    etag = client.get(f"/fhir/Patient/{patient}").headers["etag"]
    assert client.get(f"/fhir/Patient/{patient}", headers={"If-None-Match": etag}).status_code == 304
    authz.set_policies([type("Refuse", (), {"check": lambda self, p, req: "no" if req.interaction == "read" else None})()])
    try:
        r = client.get(f"/fhir/Patient/{patient}")
    finally:
        authz.set_policies([authz.AllowAll()])
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"


# ---------------------------------------------------------------- the layer alone


class FakeReader:
    def __init__(self, stored):
        self.stored = stored
        self.calls = 0

    async def read_current(self, res_type, res_id):
        self.calls += 1
        return self.stored

    async def read_with_patients(self, res_type, res_id, params):
        """As the index answers (tests/storage/test_read_with_patients.py holds the readers to it)."""
        self.calls += 1
        return self.stored, patients_of(res_type, orjson.loads(self.stored.content))


STORED = StoredResource(1, "Patient", "p1", 3, datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), False,
                        b'{"resourceType":"Patient","id":"p1"}')


def _run(stored, path="/fhir/Patient/p1", query=b"", headers=(), method="GET", principal=authz.Principal.internal()):
    """Send one request through FastReads (as a caller allowed everything unless `principal`
    says otherwise); returns (answered_by_layer, messages, reader)."""
    reader = FakeReader(stored)
    passed = []

    async def downstream(scope, receive, send):
        passed.append(scope["path"])

    sent = []

    async def send(m):
        sent.append(m)

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": list(headers),
             "state": {FAST_READER: reader, **({"principal": principal} if principal is not None else {})}}
    asyncio.run(FastReads(downstream, "/fhir")(scope, None, send))
    return not passed, sent, reader


def test_layer_leaves_unauthenticated_and_restricted_reads_to_the_app():
    """No principal (no verified token) or a compartment-restricted one: the app answers
    (a 401, or a read that asks the database whether the resource is visible)."""
    assert not _run(STORED, principal=None)[0]
    patient_token = authz.Principal(scopes=frozenset({"patient/*.rs"}), patient="p9", authenticated=True)
    assert not _run(STORED, principal=patient_token)[0]
    system_token = authz.Principal(scopes=frozenset({"system/*.rs"}), authenticated=True)
    assert _run(STORED, principal=system_token)[0]


def test_layer_answers_a_plain_read():
    answered, sent, _ = _run(STORED)
    assert answered
    start = sent[0]
    assert start["status"] == 200
    assert dict(start["headers"])[b"etag"] == b'W/"3"'
    assert dict(start["headers"])[b"last-modified"] == b"Fri, 02 Jan 2026 03:04:05 GMT"
    assert sent[1]["body"] == STORED.content


@pytest.mark.parametrize("kwargs", [
    {"query": b"_summary=true"},
    {"headers": [(b"if-none-match", b'W/"3"')]},
    {"headers": [(b"prefer", b"return=OperationOutcome")]},
    {"headers": [(b"accept", b"application/fhir+xml")]},
    {"path": "/fhir/Patient/p1/_history"},
    {"path": "/fhir/Patient/$everything"},
    {"path": "/fhir/patient/p1"},
    {"path": "/fhir/NoSuchType/p1"},
    {"path": "/other/Patient/p1"},
    {"method": "DELETE"},
])
def test_layer_leaves_everything_else_to_the_app(kwargs):
    answered, _, _ = _run(STORED, **kwargs)
    assert not answered


@pytest.mark.parametrize("stored", [None, StoredResource(1, "Patient", "p1", 4, STORED.last_updated, True, None)])
def test_missing_and_deleted_go_to_the_app(stored):
    answered, _, reader = _run(stored)
    assert not answered and reader.calls == 1


def test_postgres_reader_survives_dropped_connections(client, patient, database_url):
    """Connections the server closes (restart, idle timeout) are replaced, not served as errors."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL reader only")
    from sqlalchemy import create_engine, text

    from fhir_server.storage.async_reads import APPLICATION_NAME

    assert client.get(f"/fhir/Patient/{patient}").status_code == 200
    engine = create_engine(database_url)
    with engine.begin() as conn:
        killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :a"),
                              {"a": APPLICATION_NAME}).scalar()
    engine.dispose()
    assert killed >= 1
    for _ in range(3):
        r = client.get(f"/fhir/Patient/{patient}")
        assert r.status_code == 200, r.text


def test_asyncpg_dsn_keeps_tls_and_server_options():
    from fhir_server.storage.async_reads import APPLICATION_NAME, _asyncpg_dsn

    dsn, settings = _asyncpg_dsn("postgresql+psycopg://u:p%40ss@db:5433/fhir?sslmode=verify-full"
                                 "&options=-c%20statement_timeout%3D5000")
    assert dsn == "postgresql://u:p%40ss@db:5433/fhir?sslmode=verify-full"
    assert settings["statement_timeout"] == "5000"
    assert settings["application_name"] == APPLICATION_NAME and settings["jit"] == "off"


def test_layer_answers_reads_within_the_tokens_compartment():
    """A patient token reading inside its own compartment is answered here (decided from the
    resource's compartment references, the rule the database's criteria apply); outside it,
    or under granular scope criteria, the app answers (404 / the database decides)."""
    own = authz.Principal(scopes=frozenset({"patient/*.rs"}), patient="p1", authenticated=True)
    assert _run(STORED, principal=own)[0]
    obs = StoredResource(2, "Observation", "o1", 1, STORED.last_updated, False,
                         b'{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}')
    assert _run(obs, path="/fhir/Observation/o1", principal=own)[0]
    other = authz.Principal(scopes=frozenset({"patient/*.rs"}), patient="p2", authenticated=True)
    assert not _run(obs, path="/fhir/Observation/o1", principal=other)[0]
    granular = authz.Principal(scopes=frozenset({"patient/Observation.rs?category=laboratory"}), patient="p1", authenticated=True)
    assert not _run(obs, path="/fhir/Observation/o1", principal=granular)[0]


def test_postgres_reads_by_id_keep_a_generic_plan_and_searches_do_not(database_url):
    """A read by id has one right plan: PostgreSQL keeps it (generic) instead of planning every
    execution, which doubled its CPU per read; a search is planned for its values every time
    (a generic plan of a skewed parameter can be far off). Seen in pg_prepared_statements of
    each reader connection after ten executions."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL reader only")
    from fhir_server.storage.async_reads import PgReader

    plans = "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1"

    async def go():
        reader = PgReader(database_url, 2)
        await reader.open()
        try:
            for _ in range(10):
                assert await reader.read_current("Patient", "no-such-patient") is None
                await reader.read_with_patients("Observation", "no-such", ("subject", "performer"))
            search = "SELECT pk FROM resources WHERE res_type = $1 AND res_id = $2"
            for _ in range(10):
                assert await reader.fetch(search, ("Patient", "no-such")) == []
            by_id = await reader._run(lambda c: c.fetchrow(plans, PgReader._SQL))
            searched = await reader._run(lambda c: c.fetchrow(plans, search), search=True)
            return by_id, searched
        finally:
            await reader.close()

    by_id, searched = asyncio.run(go())
    assert by_id["generic_plans"] >= 5, by_id
    assert searched["generic_plans"] == 0 and searched["custom_plans"] == 10, searched
