"""The AuditEvent batch insert (audit.store.insert_events: index rows as tuples, one executemany
or COPY per table) stores exactly what the generic path stores: each event through
`repository.insert_resource` and the FHIRPath indexer `search.indexer.index_resource`
(SQLAlchemy inserts). Compared row by row over many generated events, on the session's
database (SQLite, or PostgreSQL with FHIR_SERVER_DATABASE_URL)."""

from __future__ import annotations

import copy
import random
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from sqlalchemy import select

from fhir_server.audit import index
from fhir_server.audit.balp import AuditFacts, to_resource
from fhir_server.audit.store import AUDIT_TYPE, delete_before, insert_events
from fhir_server.search.indexer import INDEX_TABLES, extract, index_resource
from fhir_server.storage import repository as repo
from fhir_server.storage.database import Database
from fhir_server.storage.schema import resource_versions, resources
from tests.isolated_db import isolated_database_url

_TEXTS = ["s", "bench", "Ä Öberg", "mllp:1.2.3.4:5", "x" * 70, "client-1", "a b", "", "Patient/7", "ünïcødé 漢字",
          "nul\x00here", "lone \ud800 surrogate", "tab\tand\x0cform feed"]


def generated_facts(n: int, seed: int = 13) -> list[AuditFacts]:
    """`n` AuditFacts covering the shapes the server writes: every kind and subtype, with and
    without a token, acting for another patient, searches with queries, refusals, many patients."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def maybe(v, p=0.5):
        return v if rnd.random() < p else None

    out = []
    for i in range(n):
        kind = rnd.choice(["rest", "rest", "rest", "login", "export", "hl7v2"])
        subtype = {"login": "login", "export": "$export", "hl7v2": "create"}.get(kind) or rnd.choice(
            ["read", "vread", "search-type", "search-system", "create", "update", "delete", "history-instance", "$everything", "$proxies"])
        action = {"read": "R", "vread": "R", "create": "C", "update": "U", "delete": "D"}.get(subtype, "E")
        patients = [f"p{rnd.randrange(30)}" for _ in range(rnd.choice([0, 0, 1, 1, 2, 5]))]
        data = [(rnd.choice(["Observation", "Patient", "Claim", "DocumentReference"]), f"r{rnd.randrange(50)}" + rnd.choice(["", "/_history/2"]))
                for _ in range(rnd.choice([0, 1, 1, 2]))]
        out.append(AuditFacts(
            kind=kind, subtype=subtype, action=action, status=rnd.choice([200, 200, 201, 401, 403, 404, 405, 422, 500]),
            recorded=start + timedelta(seconds=rnd.randrange(10**7), microseconds=rnd.randrange(10**6)),
            detail=rnd.choice(_TEXTS), subject=maybe(rnd.choice(_TEXTS), 0.8), client_id=maybe(rnd.choice(_TEXTS)),
            fhir_user=maybe(rnd.choice(["Patient/p1", "RelatedPerson/rp1", "Practitioner/9", "https://x.example/fhir/Patient/p3", "http://testserver/fhir/Patient/p2"])), token_id=maybe(f"jti{i}"),
            context_patient=maybe(f"p{rnd.randrange(30)}"), acting_for=maybe(f"Patient/p{rnd.randrange(30)}", 0.2),
            client_address=rnd.choice(["127.0.0.1", "10.0.0.7", "::1", ""]), server_base=rnd.choice(["http://testserver/fhir", "", "https://x.example/fhir"]),
            request_id=rnd.choice(["", f"req-{i}"]), data=data, query=maybe(f"patient=p{i}&_count=10&name=Ä"),
            patients=patients))
    return out


def test_index_tuples_are_the_generic_extractors_rows():
    """Per event: `row_tuples` (the batch insert's input) = `rows` = the FHIRPath extractor's rows."""
    def norm(by_kind):
        return {k: sorted(tuple(sorted((a, str(b)) for a, b in r.items())) for r in v) for k, v in by_kind.items() if v}

    for facts in generated_facts(400):
        event = to_resource(facts)
        generic = norm(extract("AuditEvent", event))
        for _ in range(2):  # the second time from the value cache
            assert norm(index.rows(event)) == generic, facts
            tuples = {k: [dict(zip(index.COLUMNS[k][2:], t)) for t in v] for k, v in index.row_tuples(event).items()}
            assert norm({k: [{c: x for c, x in r.items() if x is not None} for r in v] for k, v in tuples.items()}) == \
                norm({k: [{c: x for c, x in r.items() if x is not None} for r in v] for k, v in extract("AuditEvent", event).items()}), facts


def _generic_insert(conn, events: list[dict]) -> None:
    """The reference: each event stored as any resource is, indexed by FHIRPath."""
    for event in events:
        event["meta"] = {"versionId": "1", "lastUpdated": event.get("recorded"), **(event.get("meta") or {})}
        ordered = {"resourceType": AUDIT_TYPE, "id": event["id"], "meta": event["meta"], **event}
        recorded = datetime.fromisoformat(event["recorded"].replace("Z", "+00:00"))
        pk = repo.insert_resource(conn, AUDIT_TYPE, event["id"], 1, recorded, orjson.dumps(ordered), "POST")
        index_resource(conn, pk, AUDIT_TYPE, ordered)


def _snapshot(db: Database) -> dict[str, list[tuple]]:
    """Every stored AuditEvent row, keys replaced by the resource id (pk values differ per run)."""
    out = {}
    with db.read() as conn:
        r = resources.c
        ids = dict(conn.execute(select(r.pk, r.res_id).where(r.res_type == AUDIT_TYPE)).all())
        out["resources"] = sorted(tuple(row) for row in conn.execute(
            select(r.res_type, r.res_id, r.version_id, r.last_updated, r.deleted, r.content).where(r.res_type == AUDIT_TYPE)))
        v = resource_versions.c
        out["resource_versions"] = sorted((ids[row[0]], *row[1:]) for row in conn.execute(
            select(v.res_pk, v.res_type, v.res_id, v.version_id, v.last_updated, v.method, v.deleted, v.content).where(v.res_type == AUDIT_TYPE)))
        for kind, table in INDEX_TABLES.items():
            cols = [c for c in table.c if c.name not in ("id",)]
            rows = conn.execute(select(*cols).where(table.c.res_type == AUDIT_TYPE)).all()
            out[kind] = sorted((tuple(repr(x) for x in (ids[row[0]], *row[1:])) for row in rows))
    return out


@pytest.mark.parametrize("batch", [1, 7, 120])
def test_batch_insert_stores_the_same_rows_as_the_generic_path(settings, tmp_path, database_url, batch):
    """The same events stored both ways give identical resources, versions and index rows
    (every column, raw stored values); batches of 1 (the single-event path), a few rows
    (PostgreSQL: the combined INSERT) and many (executemany / COPY)."""
    from fhir_server.storage.migrate import upgrade

    with isolated_database_url(database_url, tmp_path / "equiv.sqlite", "equiv") as url:
        db = Database(url)
        try:
            upgrade(db.engine)
            facts = generated_facts(360, seed=batch)
            raw = [to_resource(f, scrubbed=False) for f in facts]  # what materialize hands insert_events
            clean = [to_resource(f) for f in facts]
            for r, c in zip(raw, clean):
                c["id"] = r["id"]
            events = clean
            assert any(r != c for r, c in zip(raw, clean))  # some events needed cleaning
            snaps = []
            for store, given in ((_generic_insert, clean), (insert_events, raw)):
                todo = copy.deepcopy(given)
                for i in range(0, len(todo), batch):
                    with db.write() as conn:
                        store(conn, todo[i:i + batch])
                snaps.append(_snapshot(db))
                with db.write() as conn:
                    delete_before(conn, datetime(2100, 1, 1, tzinfo=timezone.utc), 10_000)
            generic, fast = snaps
            assert len(generic["resources"]) == len(events)
            assert sum(len(generic[k]) for k in INDEX_TABLES) > 20 * len(events)
            for table in generic:
                assert fast[table] == generic[table], table
        finally:
            db.dispose()


def test_a_custom_audit_event_parameter_falls_back_to_the_generic_indexer(settings, tmp_path, database_url):
    """With a custom SearchParameter on AuditEvent the tuple builder steps aside (it knows only
    the standard set) and each event is indexed by the FHIRPath extractor, the custom one included;
    when the parameter goes, the fast path is back."""
    from fhir_server.search import registry
    from fhir_server.storage.migrate import upgrade

    sp = registry.SearchParam(
        code="outcome-text", type="string", url="http://example.org/sp/outcome-text", description="",
        expression="AuditEvent.outcomeDesc", base=("AuditEvent",))
    event = to_resource(generated_facts(1, seed=3)[0])
    assert index.row_tuples(event) is not None
    before = registry._custom
    with isolated_database_url(database_url, tmp_path / "custom.sqlite", "custom") as url:
        db = Database(url)
        try:
            upgrade(db.engine)
            registry.set_custom({"AuditEvent": (sp,)})
            assert index.row_tuples(event) is None
            with db.write() as conn:
                insert_events(conn, [copy.deepcopy(event), to_resource(generated_facts(2, seed=4)[1])])
            with db.read() as conn:
                table = INDEX_TABLES["string"]
                texts = [row[0] for row in conn.execute(select(table.c.value_exact).where(table.c.param == "outcome-text"))]
            assert event["outcomeDesc"] in texts and len(texts) == 2
        finally:
            registry.set_custom(before)
            db.dispose()
    assert index.row_tuples(event) is not None
