"""The booking migration indexes Slots stored before it ran."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import select

from fhir_server.storage.db import make_engine
from fhir_server.storage.migrate import upgrade
from fhir_server.storage.schema import booking_slots, resources


def test_backfill_of_existing_slots(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        upgrade(engine, "0001")
        slot = {"resourceType": "Slot", "id": "s1", "schedule": {"reference": "Schedule/a"}, "status": "free",
                "start": "2031-01-01T09:00:00Z", "end": "2031-01-01T09:20:00Z",
                "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}]}
        with engine.begin() as conn:
            conn.execute(resources.insert().values(res_type="Slot", res_id="s1", version_id=1, deleted=False,
                                                   last_updated=datetime.now(timezone.utc), content=json.dumps(slot).encode()))
        upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(select(booking_slots)).one()
        assert row.slot_id == "s1" and row.schedule_id == "a" and row.status == "free"
        assert " sp:http://snomed.info/sct|394814009 " in row.codes
    finally:
        engine.dispose()
