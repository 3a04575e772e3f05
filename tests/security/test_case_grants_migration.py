"""Migration 0017 fills `case_consent_grants` from the Consents already stored, and the
rows follow the R4 provision rules (security/case_grants.rows_for)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import create_engine, select, text

from fhir_server.security.case_grants import rows_for
from fhir_server.storage.migrate import upgrade


def _consent(status: str, provision: dict) -> dict:
    return {"resourceType": "Consent", "id": "c1", "status": status, "patient": {"reference": "Patient/p1"}, "provision": provision}


def test_rows_follow_nesting_type_and_periods():
    p = {"type": "permit", "period": {"start": "2026-01-01", "end": "2026-12-31"},
         "data": [{"reference": {"reference": "Claim/1"}}, {"reference": {"reference": "Observation/9"}}],
         "provision": [{"type": "deny", "period": {"start": "2026-06-01"}, "data": [{"reference": {"reference": "Encounter/2"}}]},
                       {"period": {"end": "2027-06-01"}, "data": [{"reference": {"reference": "http://x.example/fhir/CarePlan/3"}}]}]}
    rows = {(r["case_type"], r["case_id"]): r for r in rows_for("c1", _consent("active", p))}
    assert set(rows) == {("Claim", "1"), ("Encounter", "2"), ("CarePlan", "3")}  # not the Observation: no case
    utc = timezone.utc
    assert rows[("Claim", "1")]["kind"] == "permit" and rows[("Claim", "1")]["ends"] == datetime(2027, 1, 1, tzinfo=utc)
    assert rows[("Encounter", "2")]["kind"] == "deny" and rows[("Encounter", "2")]["starts"] == datetime(2026, 6, 1, tzinfo=utc)
    # a nested period cannot reach past its parent's
    assert rows[("CarePlan", "3")]["kind"] == "permit" and rows[("CarePlan", "3")]["ends"] == datetime(2027, 1, 1, tzinfo=utc)
    for status in ("draft", "proposed", "inactive", "rejected", "entered-in-error"):
        assert rows_for("c1", _consent(status, p)) == []


def test_migration_backfills_stored_consents(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0002_auth")
    consent = _consent("active", {"type": "permit", "data": [{"reference": {"reference": "Claim/7"}}]})
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, content) "
                          "VALUES ('Consent', 'c1', 1, '2026-01-01 00:00:00', 0, :c)"), {"c": json.dumps(consent).encode()})
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(text("patient_id, case_type, case_id, kind")).select_from(text("case_consent_grants"))).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("p1", "Claim", "7", "permit")]
