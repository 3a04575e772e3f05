"""$find, $hold, $book and rescheduling (Argonaut Scheduling), hold expiry and
booking windows with a controlled clock."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import httpx

from fhir_server import clock
from fhir_server.jobs.runner import run_pending

from tests.workflows.booking.helpers import FHIR_JSON, future, iso, make_patient, make_schedule, make_slot, post


def _params(*appts, **refs) -> dict:
    p = [{"name": "appt-resource", "resource": a} for a in appts]
    p += [{"name": k, "valueReference": {"reference": v}} for k, v in refs.items()]
    return {"resourceType": "Parameters", "parameter": p}


def _slot(client, sid):
    return client.get(f"/fhir/Slot/{sid}").json()


def _find(client, **q):
    r = client.get("/fhir/Appointment/$find", params=q)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def test_find_returns_proposals_from_free_slots_only(client):
    pract, sched = make_schedule(client)
    patient = make_patient(client)
    t0 = future(days=10)
    slots = [make_slot(client, sched["id"], t0 + timedelta(minutes=20 * i)) for i in range(4)]
    make_slot(client, sched["id"], t0 + timedelta(hours=3), status="busy-unavailable")
    found = _find(client, practitioner=f"Practitioner/{pract['id']}", start=iso(t0 - timedelta(minutes=1)),
                  end=iso(t0 + timedelta(days=1)), patient=f"Patient/{patient['id']}", _count="3")
    assert [a["slot"][0]["reference"] for a in found] == [f"Slot/{s['id']}" for s in slots[:3]]
    assert all(a["status"] == "proposed" and "id" not in a for a in found)
    assert found[0]["participant"][0]["actor"]["reference"] == f"Patient/{patient['id']}"
    assert {"reference": f"Practitioner/{pract['id']}"} in [p["actor"] for p in found[0]["participant"]]
    # book the first: it disappears from $find
    appt = dict(found[0])
    r = client.post("/fhir/Appointment/$book", json=_params(appt), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    found2 = _find(client, practitioner=f"Practitioner/{pract['id']}", start=iso(t0 - timedelta(minutes=1)),
                   end=iso(t0 + timedelta(days=1)))
    assert f"Slot/{slots[0]['id']}" not in [a["slot"][0]["reference"] for a in found2]
    assert len(found2) == 3
    # filters: unknown service type finds nothing; bad values are 400
    assert _find(client, practitioner=f"Practitioner/{pract['id']}", **{"service-type": "http://example.org/service|nope"}) == []
    assert client.get("/fhir/Appointment/$find", params={"start": "yesterday"}).status_code == 400
    assert client.get("/fhir/Appointment/$find", params={"practitioner": "Patient/1"}).status_code == 400


def test_hold_then_book_and_hold_expiry(client, app):
    pract, sched = make_schedule(client)
    patient = make_patient(client)
    slot = make_slot(client, sched["id"], future(days=8))
    (proposal,) = _find(client, practitioner=f"Practitioner/{pract['id']}", start=slot["start"], end=slot["end"],
                        patient=f"Patient/{patient['id']}")
    r = client.post("/fhir/Appointment/$hold", json=_params(proposal), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    held = r.json()["entry"][0]["resource"]
    assert held["status"] == "proposed" and _slot(client, slot["id"])["status"] == "busy"
    # someone else cannot hold or book it meanwhile
    assert client.post("/fhir/Appointment/$hold", json=_params(proposal), headers=FHIR_JSON).status_code == 409
    assert client.post("/fhir/Appointment/$book", json=_params(proposal), headers=FHIR_JSON).status_code == 409
    held["participant"][0]["status"] = "accepted"
    r = client.post("/fhir/Appointment/$book", json=_params(held), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    booked = r.json()["entry"][0]["resource"]
    assert booked["id"] == held["id"] and booked["status"] == "booked"
    # after the hold time the expiry job leaves a booked appointment alone
    with clock.frozen(datetime.now(timezone.utc) + timedelta(minutes=app.state.settings.booking_hold_minutes + 1)):
        run_pending(app.state.db, app.state.settings, kinds=["booking.hold-expiry"])
    assert client.get(f"/fhir/Appointment/{held['id']}").json()["status"] == "booked"
    assert _slot(client, slot["id"])["status"] == "busy"


def test_unbooked_hold_expires_by_itself(client, app):
    pract, sched = make_schedule(client)
    patient = make_patient(client)
    slot = make_slot(client, sched["id"], future(days=8))
    (proposal,) = _find(client, practitioner=f"Practitioner/{pract['id']}", start=slot["start"], end=slot["end"],
                        patient=f"Patient/{patient['id']}")
    held = client.post("/fhir/Appointment/$hold", json=_params(proposal), headers=FHIR_JSON).json()["entry"][0]["resource"]
    minutes = app.state.settings.booking_hold_minutes
    with clock.frozen(datetime.now(timezone.utc) + timedelta(minutes=minutes - 1)):
        run_pending(app.state.db, app.state.settings, kinds=["booking.hold-expiry"])
        assert _slot(client, slot["id"])["status"] == "busy"
    with clock.frozen(datetime.now(timezone.utc) + timedelta(minutes=minutes + 1)):
        run_pending(app.state.db, app.state.settings, kinds=["booking.hold-expiry"])
    assert client.get(f"/fhir/Appointment/{held['id']}").json()["status"] == "cancelled"
    assert _slot(client, slot["id"])["status"] == "free"


def test_stale_hold_gives_way_even_without_the_worker(client, app):
    pract, sched = make_schedule(client)
    patient = make_patient(client)
    slot = make_slot(client, sched["id"], future(days=8))
    (proposal,) = _find(client, practitioner=f"Practitioner/{pract['id']}", start=slot["start"], end=slot["end"],
                        patient=f"Patient/{patient['id']}")
    held = client.post("/fhir/Appointment/$hold", json=_params(proposal), headers=FHIR_JSON).json()["entry"][0]["resource"]
    with clock.frozen(datetime.now(timezone.utc) + timedelta(minutes=app.state.settings.booking_hold_minutes + 1)):
        r = client.post("/fhir/Appointment/$book", json=_params(proposal), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert client.get(f"/fhir/Appointment/{held['id']}").json()["status"] == "cancelled"


def test_reschedule_is_one_atomic_step(client):
    pract, sched = make_schedule(client)
    patient = make_patient(client)
    t0 = future(days=9)  # one random start, the slots 20 minutes apart: independent picks could collide
    a, b, c = (make_slot(client, sched["id"], t0 + timedelta(minutes=20 * i)) for i in range(3))
    q = {"practitioner": f"Practitioner/{pract['id']}", "patient": f"Patient/{patient['id']}"}
    (pa,) = _find(client, start=a["start"], end=a["end"], **q)
    first = client.post("/fhir/Appointment/$book", json=_params(pa), headers=FHIR_JSON).json()["entry"][0]["resource"]
    (pb,) = _find(client, start=b["start"], end=b["end"], **q)
    r = client.post("/fhir/Appointment/$book", json=_params(pb, reschedule=f"Appointment/{first['id']}"), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    new, old = (e["resource"] for e in r.json()["entry"])
    assert new["status"] == "booked" and old["status"] == "cancelled" and old["id"] == first["id"]
    assert _slot(client, a["id"])["status"] == "free" and _slot(client, b["id"])["status"] == "busy"
    # a reschedule onto a taken slot changes nothing: the old booking stays
    other = make_patient(client)
    (pc,) = _find(client, start=c["start"], end=c["end"], practitioner=f"Practitioner/{pract['id']}", patient=f"Patient/{other['id']}")
    assert client.post("/fhir/Appointment/$book", json=_params(pc), headers=FHIR_JSON).status_code == 200
    pc_mine = dict(pc)
    pc_mine["participant"] = [{"actor": {"reference": f"Patient/{patient['id']}"}, "status": "accepted"}]
    old_cancel = {**new, "status": "cancelled"}
    r = client.post("/fhir/Appointment/$book", json=_params(pc_mine, old_cancel), headers=FHIR_JSON)
    assert r.status_code == 409
    assert client.get(f"/fhir/Appointment/{new['id']}").json()["status"] == "booked"
    assert _slot(client, b["id"])["status"] == "busy"


def _warsaw_org(client) -> dict:
    return post(client, {"resourceType": "Organization", "name": "Przychodnia",
                         "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.4424.2.2.1", "value": "000000000001"}]})


def test_booking_windows_with_a_fixed_clock(client):
    org = _warsaw_org(client)
    pract = post(client, {"resourceType": "Practitioner", "name": [{"family": "Nowak"}]})
    sched = post(client, {"resourceType": "Schedule", "actor": [{"reference": f"Practitioner/{pract['id']}"},
                                                                {"reference": f"Organization/{org['id']}"}]})
    patient = make_patient(client)
    # 2031-03-10 is a Monday; Warsaw is UTC+1 in March
    day = datetime(2031, 3, 12, 9, 0, tzinfo=timezone.utc)
    slot = make_slot(client, sched["id"], day)
    far = make_slot(client, sched["id"], day + timedelta(days=120))
    q = {"practitioner": f"Practitioner/{pract['id']}", "patient": f"Patient/{patient['id']}"}

    def book(s, at):
        with clock.frozen(at):
            (p,) = _find(client, start=s["start"], end=s["end"], **q) or [None]
            if p is None:
                return None
            return client.post("/fhir/Appointment/$book", json=_params(p), headers=FHIR_JSON)

    # 22:30 Warsaw (21:30 UTC): closed
    r = book(slot, datetime(2031, 3, 10, 21, 30, tzinfo=timezone.utc))
    assert r.status_code == 422 and "07:00-22:00" in r.json()["issue"][0]["diagnostics"]
    # 06:59 Warsaw: closed; 07:00: open
    assert book(slot, datetime(2031, 3, 10, 5, 59, tzinfo=timezone.utc)).status_code == 422
    # an hour before the start is inside the 120-minute lead time; $find leaves it out
    assert book(slot, day - timedelta(hours=1)) is None
    # 120 days ahead is beyond the 90-day horizon
    assert book(far, datetime(2031, 3, 10, 8, 0, tzinfo=timezone.utc)) is None
    r = book(slot, datetime(2031, 3, 10, 6, 0, tzinfo=timezone.utc))
    assert r.status_code == 200, r.text
    booked = r.json()["entry"][0]["resource"]
    # cancelling online closes 24 hours before: rescheduling 20 hours before is refused
    other = make_slot(client, sched["id"], day + timedelta(days=1))
    with clock.frozen(day - timedelta(hours=20)):
        (p,) = _find(client, start=other["start"], end=other["end"], **q)
        r = client.post("/fhir/Appointment/$book", json=_params(p, reschedule=f"Appointment/{booked['id']}"), headers=FHIR_JSON)
    assert r.status_code == 422 and "24 hours" in r.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Appointment/{booked['id']}").json()["status"] == "booked"


def test_twenty_concurrent_book_operations(client, live_server, auth_headers):
    pract, sched = make_schedule(client)
    patient = make_patient(client)
    slot = make_slot(client, sched["id"], future(days=11))
    (p,) = _find(client, start=slot["start"], end=slot["end"], practitioner=f"Practitioner/{pract['id']}",
                 patient=f"Patient/{patient['id']}")
    body = _params(p)
    headers = {**FHIR_JSON, **auth_headers}
    barrier = threading.Barrier(20)
    codes: list[int] = []

    def go():
        barrier.wait()
        codes.append(httpx.post(f"{live_server}/Appointment/$book", json=body, headers=headers, timeout=60).status_code)

    threads = [threading.Thread(target=go) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [200] + [409] * 19, codes
    found = client.get(f"/fhir/Appointment?slot=Slot/{slot['id']}&status=booked").json()
    assert found["total"] == 1


def test_bad_bodies_are_400(client):
    assert client.post("/fhir/Appointment/$book", content=b"{}", headers=FHIR_JSON).status_code == 400
    assert client.post("/fhir/Appointment/$hold", json={"resourceType": "Parameters", "parameter": [
        {"name": "appt-resource", "resource": {"resourceType": "Patient"}}]}, headers=FHIR_JSON).status_code == 400
    assert client.get("/fhir/Appointment/$book").status_code == 400


def test_find_filters_by_codes_and_skips_inactive_schedules(client):
    pract, sched = make_schedule(client)
    t0 = future(days=12)
    slot = make_slot(client, sched["id"], t0, service_code="vaccination")
    q = {"practitioner": f"Practitioner/{pract['id']}", "start": iso(t0 - timedelta(minutes=1)), "end": iso(t0 + timedelta(hours=1))}
    assert len(_find(client, **q, specialty="http://snomed.info/sct|394814009")) == 1
    assert len(_find(client, **q, specialty="394814009")) == 1
    assert len(_find(client, **q, **{"service-type": "http://example.org/service|vaccination,x|y"})) == 1
    assert len(_find(client, **q, **{"visit-type": "ROUTINE"})) == 1
    assert _find(client, **q, **{"visit-type": "WALKIN"}) == []
    # without a practitioner the specialty search finds it too, until its Schedule is made inactive
    q2 = {"start": q["start"], "end": q["end"], "service-type": "http://example.org/service|vaccination", "_count": "100"}
    assert f"Slot/{slot['id']}" in [a["slot"][0]["reference"] for a in _find(client, **q2)]
    sched["active"] = False
    assert client.put(f"/fhir/Schedule/{sched['id']}", json=sched, headers=FHIR_JSON).status_code == 200
    assert f"Slot/{slot['id']}" not in [a["slot"][0]["reference"] for a in _find(client, **q2)]
    assert _find(client, **q) == []


def test_slot_index_tokens():
    from fhir_server.workflows.booking.slot_index import code_tokens, token_pattern

    slot = {"specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}],
            "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "ROUTINE"}]}}
    tokens = code_tokens(slot)
    assert " sp:http://snomed.info/sct|394814009 " in tokens and " vt:|ROUTINE " in tokens
    assert token_pattern("sp", "394814009") == "% sp:%|394814009 %"
    assert token_pattern("st", "a|b%_") == "% st:a|b %"
