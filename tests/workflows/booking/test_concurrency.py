"""Races for one Slot: twenty concurrent bookings give one success and 19 x 409,
over real HTTP (a live server), and an HL7 v2 SIU^S12 racing a FHIR booking."""

from __future__ import annotations

import threading
import uuid

import httpx

from fhir_server.hl7v2.er7 import parse
from fhir_server.hl7v2.inbound import process_message
from fhir_server.hl7v2.service import make_apply_transaction

from .helpers import FHIR_JSON, appointment, future, make_patient, make_schedule, make_slot, post

N = 20


def _race(fns):
    barrier = threading.Barrier(len(fns))
    results: list = [None] * len(fns)

    def run(i):
        barrier.wait()
        try:
            results[i] = fns[i]()
        except Exception as exc:  # recorded, asserted below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _active_on(client, slot_id):
    found = client.get(f"/fhir/Appointment?slot=Slot/{slot_id}&status=proposed,pending,booked,arrived,checked-in&_count=100").json()
    return [e["resource"] for e in found.get("entry", [])]


def test_twenty_concurrent_posts_one_wins(client, live_server, auth_headers):
    _pract, sched = make_schedule(client)
    slot = make_slot(client, sched["id"], future())
    patient = make_patient(client)
    body = appointment(slot, patient["id"])
    headers = {**FHIR_JSON, **auth_headers}

    def book():
        return httpx.post(f"{live_server}/Appointment", json=body, headers=headers, timeout=60).status_code

    codes = _race([book] * N)
    assert sorted(codes) == [201] + [409] * (N - 1), codes
    assert client.get(f"/fhir/Slot/{slot['id']}").json()["status"] == "busy"
    assert len(_active_on(client, slot["id"])) == 1


def _siu(slot_ident: str, control: str, start: str, end: str, pnr: str = "191212121212") -> str:
    s = start.replace("-", "").replace(":", "").replace("T", "").replace("Z", "+0000")
    e = end.replace("-", "").replace(":", "").replace("T", "").replace("Z", "+0000")
    return (f"MSH|^~\\&|SCHED|CLINIC|FHIR|SRV|20240101120000+0100||SIU^S12^SIU_S12|{control}|P|2.5\r"
            f"SCH|P{control}|F{control}|||{slot_ident}^^urn:slots||||||^^^{s}^{e}|||||||||||||Booked\r"
            f"PID|1||{pnr}^^^^NNSWE||Tolvansson^Tolvan\r")


def test_siu_s12_races_fhir_booking(client, app):
    _pract, sched = make_schedule(client)
    ident = f"SLOT-{uuid.uuid4().hex[:8]}"
    slot = make_slot(client, sched["id"], future())
    slot["identifier"] = [{"system": "urn:slots", "value": ident}]
    assert client.put(f"/fhir/Slot/{slot['id']}", json=slot, headers=FHIR_JSON).status_code == 200
    patient = make_patient(client)
    apply = make_apply_transaction(app.state.db, app.state.settings)
    msg = _siu(ident, uuid.uuid4().hex[:10], slot["start"], slot["end"])

    def via_hl7():
        ack = process_message(msg, engine=app.state.db.engine, apply_transaction=apply)
        return parse(ack).first("MSA").get(1)

    def via_fhir():
        return client.post("/fhir/Appointment", json=appointment(slot, patient["id"]), headers=FHIR_JSON).status_code

    for _round in range(3):
        hl7_code, fhir_code = _race([via_hl7, via_fhir])
        assert sorted([hl7_code == "AA", fhir_code == 201]) == [False, True], (hl7_code, fhir_code)
        assert fhir_code in (201, 409)
        assert len(_active_on(client, slot["id"])) == 1
        assert client.get(f"/fhir/Slot/{slot['id']}").json()["status"] == "busy"
        # free the slot again for the next round
        (active,) = _active_on(client, slot["id"])
        active["status"] = "cancelled"
        assert client.put(f"/fhir/Appointment/{active['id']}", json=active, headers=FHIR_JSON).status_code == 200
        assert client.get(f"/fhir/Slot/{slot['id']}").json()["status"] == "free"
        msg = _siu(ident, uuid.uuid4().hex[:10], slot["start"], slot["end"], pnr="191212121212")
