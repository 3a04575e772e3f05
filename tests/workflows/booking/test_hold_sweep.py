"""Every server process sweeps expired holds: two sweeps at once cancel each
hold once, without deadlocking on each other's row locks."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from fhir_server import clock
from fhir_server.workflows.booking.holds import sweep

from .helpers import FHIR_JSON, appointment, future, make_patient, make_schedule, make_slot


def test_two_concurrent_sweeps_cancel_each_hold_once(client, app):
    pract, sched = make_schedule(client)
    patient = make_patient(client)
    held = []
    for _ in range(12):
        slot = make_slot(client, sched["id"], future(days=9))
        params = {"resourceType": "Parameters",
                  "parameter": [{"name": "appt-resource", "resource": appointment(slot, patient["id"], status="proposed")}]}
        r = client.post("/fhir/Appointment/$hold", json=params, headers=FHIR_JSON)
        assert r.status_code == 200, r.text
        held.append(r.json()["entry"][0]["resource"]["id"])
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run():
        try:
            barrier.wait()
            sweep(app.state.db, app.state.settings)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    later = datetime.now(timezone.utc) + timedelta(minutes=app.state.settings.booking_hold_minutes + 1)
    with clock.frozen(later):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    for appt_id in held:
        history = client.get(f"/fhir/Appointment/{appt_id}/_history").json()["entry"]
        assert [e["resource"]["status"] for e in history].count("cancelled") == 1
