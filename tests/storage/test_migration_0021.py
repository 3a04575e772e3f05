"""Migration 0021: AuditEvents stored by earlier versions, and read events still staged, move
into the access log; a read of them answers as before."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import orjson
import sqlalchemy as sa

from fhir_server.audit.balp import AuditFacts
from fhir_server.audit.log import read
from fhir_server.storage.database import Database
from fhir_server.storage.migrate import upgrade
from fhir_server.storage.schema import audit_log, resource_versions, resources


def test_stored_and_staged_events_move_into_the_log(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    upgrade(db.engine, "0020_covering_index_rows")
    stored = {"resourceType": "AuditEvent", "id": "old-1", "meta": {"versionId": "1", "lastUpdated": "2025-05-01T10:00:00.000Z"},
              "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
              "recorded": "2025-05-01T10:00:00.000Z", "outcome": "0",
              "agent": [{"requestor": True, "who": {"reference": "Practitioner/pr-1"}}],
              "source": {"observer": {"display": "x"}}, "entity": [{"what": {"reference": "Patient/p-1"}}]}
    content = json.dumps(stored).encode()
    at = datetime(2025, 5, 1, 10, tzinfo=timezone.utc)
    facts = AuditFacts("rest", "read", "R", 200, datetime(2025, 6, 1, tzinfo=timezone.utc), subject="staff-1",
                       request_id="staged-req", data=[("Patient", "p-2")], patients=["p-2"])
    staged = sa.table("audit_staged", sa.column("facts"))
    with db.engine.begin() as conn:
        pk = conn.execute(resources.insert().values(res_type="AuditEvent", res_id="old-1", version_id=1, last_updated=at,
                                                    deleted=False, content=content)).inserted_primary_key[0]
        conn.execute(resource_versions.insert().values(res_pk=pk, res_type="AuditEvent", res_id="old-1", version_id=1,
                                                       last_updated=at, method="POST", deleted=False, content=content))
        conn.execute(staged.insert().values(facts=orjson.dumps({"f": facts, "l": []})))
    upgrade(db.engine)
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(resources.c.res_type == "AuditEvent")).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(resource_versions)).scalar_one() == 0
        assert json.loads(read(conn, "old-1")[2]) == stored  # served as it was stored
        ids = [r[0] for r in conn.execute(sa.select(audit_log.c.id).where(audit_log.c.id != "old-1"))]
        assert len(ids) == 1
        event = json.loads(read(conn, ids[0])[2])
        assert sa.inspect(conn).has_table("audit_staged") is False
    assert event["subtype"][0]["code"] == "read" and event["recorded"].startswith("2025-06-01")
    assert {e["what"].get("reference") for e in event["entity"] if "what" in e} >= {"Patient/p-2"}
    assert any(e["what"].get("identifier", {}).get("value") == "staged-req" for e in event["entity"] if "what" in e)
    db.dispose()
