"""Slot integrity through the FHIR API: every path keeps Slot.status true and
refuses a second active booking of one Slot."""

from __future__ import annotations

from datetime import timedelta

from .helpers import FHIR_JSON, appointment, future, iso, make_patient, make_schedule, make_slot, post


def _slot(client, slot_id):
    return client.get(f"/fhir/Slot/{slot_id}").json()


def _setup(client, **kw):
    pract, sched = make_schedule(client)
    slot = make_slot(client, sched["id"], future(), **kw)
    patient = make_patient(client)
    return pract, sched, slot, patient


def test_booking_makes_slot_busy_and_second_booking_is_409(client):
    pract, _s, slot, patient = _setup(client)
    first = post(client, appointment(slot, patient["id"], pract_id=pract["id"]))
    assert _slot(client, slot["id"])["status"] == "busy"
    r = client.post("/fhir/Appointment", json=appointment(slot, patient["id"]), headers=FHIR_JSON)
    assert r.status_code == 409, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "conflict"
    assert "already taken" in issue["diagnostics"]
    assert issue["expression"] == ["Appointment.slot[0]"]
    # the free-slot search tells the truth
    found = client.get(f"/fhir/Slot?status=free&_id={slot['id']}").json()
    assert found.get("total", len(found.get("entry", []))) == 0
    assert client.get(f"/fhir/Appointment/{first['id']}").status_code == 200


def test_busy_slot_cannot_be_booked(client):
    _p, _s, slot, patient = _setup(client, status="busy")
    r = client.post("/fhir/Appointment", json=appointment(slot, patient["id"]), headers=FHIR_JSON)
    assert r.status_code == 409
    assert r.json()["issue"][0]["expression"] == ["Appointment.slot[0]"]


def test_cancel_noshow_delete_free_the_slot(client):
    for how in ("cancelled", "noshow", "entered-in-error", "delete"):
        _p, _s, slot, patient = _setup(client)
        appt = post(client, appointment(slot, patient["id"]))
        assert _slot(client, slot["id"])["status"] == "busy"
        if how == "delete":
            assert client.delete(f"/fhir/Appointment/{appt['id']}").status_code in (200, 204)
        else:
            appt["status"] = how
            r = client.put(f"/fhir/Appointment/{appt['id']}", json=appt, headers=FHIR_JSON)
            assert r.status_code == 200, r.text
        assert _slot(client, slot["id"])["status"] == "free", how
        # and the slot can be booked again
        post(client, appointment(slot, patient["id"]))


def test_patch_cancel_frees_and_move_takes_new_slot(client):
    _p, sched, slot, patient = _setup(client)
    other = make_slot(client, sched["id"], future(days=4))
    appt = post(client, appointment(slot, patient["id"]))
    # move to another slot with a JSON Patch
    ops = [{"op": "replace", "path": "/slot/0/reference", "value": f"Slot/{other['id']}"},
           {"op": "replace", "path": "/start", "value": other["start"]},
           {"op": "replace", "path": "/end", "value": other["end"]}]
    r = client.patch(f"/fhir/Appointment/{appt['id']}", json=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert _slot(client, slot["id"])["status"] == "free"
    assert _slot(client, other["id"])["status"] == "busy"
    r = client.patch(f"/fhir/Appointment/{appt['id']}", json=[{"op": "replace", "path": "/status", "value": "cancelled"}],
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200
    assert _slot(client, other["id"])["status"] == "free"


def test_booked_slot_cannot_be_deleted_or_freed(client):
    _p, _s, slot, patient = _setup(client)
    appt = post(client, appointment(slot, patient["id"]))
    r = client.delete(f"/fhir/Slot/{slot['id']}")
    assert r.status_code == 409, r.text
    assert client.get(f"/fhir/Slot/{slot['id']}").status_code == 200
    s = _slot(client, slot["id"])
    s["status"] = "free"
    r = client.put(f"/fhir/Slot/{slot['id']}", json=s, headers=FHIR_JSON)
    assert r.status_code == 409 and r.json()["issue"][0]["code"] == "conflict"
    assert _slot(client, slot["id"])["status"] == "busy"
    appt["status"] = "cancelled"
    client.put(f"/fhir/Appointment/{appt['id']}", json=appt, headers=FHIR_JSON)
    assert client.delete(f"/fhir/Slot/{slot['id']}").status_code in (200, 204)


def test_appointment_rules(client):
    _p, _s, slot, patient = _setup(client)
    a = appointment(slot, patient["id"])
    a["start"], a["end"] = a["end"], a["start"]
    r = client.post("/fhir/Appointment", json=a, headers=FHIR_JSON)
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Appointment.end"]
    a = appointment(slot, patient["id"])
    a["end"] = iso(future(days=30))
    r = client.post("/fhir/Appointment", json=a, headers=FHIR_JSON)
    assert r.status_code == 422 and "after its Slot ends" in r.json()["issue"][0]["diagnostics"]
    a = appointment(slot, patient["id"])
    a["participant"] = [{"actor": {"reference": "Practitioner/x"}, "status": "accepted"}]
    r = client.post("/fhir/Appointment", json=a, headers=FHIR_JSON)
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Appointment.participant"]
    a = appointment(slot, patient["id"])
    del a["start"]
    r = client.post("/fhir/Appointment", json=a, headers=FHIR_JSON)
    assert r.status_code == 422
    a = appointment(slot, patient["id"])
    a["slot"] = [{"reference": "Slot/does-not-exist"}]
    r = client.post("/fhir/Appointment", json=a, headers=FHIR_JSON)
    assert r.status_code == 422
    # nothing was written by any of these: the slot is still free
    assert _slot(client, slot["id"])["status"] == "free"


def test_transaction_with_two_bookings_of_one_slot_rolls_back(client):
    _p, _s, slot, patient = _setup(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": appointment(slot, patient["id"]), "request": {"method": "POST", "url": "Appointment"}},
        {"resource": appointment(slot, patient["id"]), "request": {"method": "POST", "url": "Appointment"}},
    ]}
    r = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 409, r.text
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.slot[0]"]
    assert _slot(client, slot["id"])["status"] == "free"
    # one booking in a transaction is fine
    bundle["entry"] = bundle["entry"][:1]
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    assert _slot(client, slot["id"])["status"] == "busy"


def test_group_slot_capacity(client):
    _p, _s, slot, patient = _setup(client, capacity=2)
    post(client, appointment(slot, patient["id"]))
    assert _slot(client, slot["id"])["status"] == "free"  # one seat left
    post(client, appointment(slot, patient["id"]))
    assert _slot(client, slot["id"])["status"] == "busy"
    r = client.post("/fhir/Appointment", json=appointment(slot, patient["id"]), headers=FHIR_JSON)
    assert r.status_code == 409


def test_unrelated_slot_update_keeps_working(client):
    _p, _s, slot, _patient = _setup(client)
    s = _slot(client, slot["id"])
    s["comment"] = "room changed"
    s["status"] = "busy-unavailable"
    assert client.put(f"/fhir/Slot/{slot['id']}", json=s, headers=FHIR_JSON).status_code == 200
    s["status"] = "free"
    assert client.put(f"/fhir/Slot/{slot['id']}", json=s, headers=FHIR_JSON).status_code == 200
    assert _slot(client, slot["id"])["start"] == slot["start"]
    assert timedelta(0) == timedelta(0)
