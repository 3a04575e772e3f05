"""The HL7 v2 interface as deployed: POST /hl7v2, the MLLP listener started
with the app, and SIU out when an Appointment changes through FHIR."""

from __future__ import annotations

import socket
import threading
import uuid

import pytest
from fastapi.testclient import TestClient

PESEL_OID = "2.16.840.1.113883.3.4424.1.1.616"


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _adt(control_id: str, pesel: str, family: str) -> str:
    return "\r".join([
        f"MSH|^~\\&|EHR|CLINIC|FHIR|SERVER|20240501120000||ADT^A01^ADT_A01|{control_id}|P|2.5",
        "EVN|A01|20240501120000",
        f"PID|1||{pesel}^^^&{PESEL_OID}&ISO^NNPOL||{family}^Anna||19440514|F",
        "PV1|1|O",
    ]) + "\r"


def _patients(client, pesel: str) -> list[dict]:
    b = client.get(f"/fhir/Patient?identifier=urn:oid:{PESEL_OID}|{pesel}").json()
    return [e["resource"] for e in b.get("entry", []) if e["search"]["mode"] == "match"]


def test_post_hl7v2_applies_adt_and_patient_is_found_by_fhir(client):
    family = f"Nowak{uuid.uuid4().hex[:6]}"
    ack = client.post("/hl7v2", content=_adt(uuid.uuid4().hex[:12], "44051401458", family).encode()).text
    assert "MSA|AA|" in ack, ack
    found = _patients(client, "44051401458")
    assert [p["name"][0]["family"] for p in found if p["name"][0]["family"] == family] == [family]


def test_unknown_message_type_is_rejected_over_http(client):
    msg = "MSH|^~\\&|EHR|CLINIC|FHIR|SERVER|20240501120000||ZZZ^Z01|C-1|P|2.5\r"
    ack = client.post("/hl7v2", content=msg.encode()).text
    assert "MSA|AR|C-1" in ack and "ERR|" in ack


def test_mllp_listener_runs_with_the_app(settings, auth_headers):
    from fhir_server.bootstrap import build_app
    from fhir_server.hl7v2.listener import send_mllp

    port = _free_port()
    app = build_app(settings.model_copy(update={"mllp_port": port, "mllp_host": "127.0.0.1"}))
    with TestClient(app, headers=auth_headers) as client:
        family = f"Mllp{uuid.uuid4().hex[:6]}"
        ack = send_mllp("127.0.0.1", port, _adt(uuid.uuid4().hex[:12], "02070803628", family))
        assert "MSA|AA|" in ack
        assert any(p["name"][0]["family"] == family for p in _patients(client, "02070803628"))


class _Receiver:
    """A minimal MLLP peer that records messages and answers AA."""

    def __init__(self):
        self.messages: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            buf = b""
            with conn:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    buf += data
                    while b"\x1c\r" in buf:
                        frame, buf = buf.split(b"\x1c\r", 1)
                        msg = frame.lstrip(b"\x0b").decode()
                        self.messages.append(msg)
                        ctrl = msg.split("\r")[0].split("|")[9]
                        ack = f"MSH|^~\\&|R|R|S|S|20240101||ACK|A{ctrl}|P|2.5\rMSA|AA|{ctrl}\r"
                        conn.sendall(b"\x0b" + ack.encode() + b"\x1c\r")


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.sock.close()


def test_appointment_changes_send_siu(settings, receiver, auth_headers):
    from fhir_server.bootstrap import build_app
    from fhir_server.hl7v2 import outbound
    from fhir_server.storage.database import Database

    app = build_app(settings.model_copy(update={"hl7_destinations": f"127.0.0.1:{receiver.port}", "run_background_jobs": False}))
    try:
        with TestClient(app, headers=auth_headers) as client:
            appt = {
                "resourceType": "Appointment",
                "status": "booked",
                "start": "2030-03-01T09:00:00Z",
                "end": "2030-03-01T09:20:00Z",
                "participant": [{"actor": {"display": "Dr Test"}, "status": "accepted"},
                                {"actor": {"type": "Patient", "display": "Test Patient"}, "status": "accepted"}],
            }
            rid = client.post("/fhir/Appointment", json=appt).json()["id"]
            client.put(f"/fhir/Appointment/{rid}", json={**appt, "id": rid, "start": "2030-03-02T09:00:00Z", "end": "2030-03-02T09:20:00Z"})
            client.put(f"/fhir/Appointment/{rid}", json={**appt, "id": rid, "status": "cancelled"})
            db = Database(settings.database_url)
            for _ in range(5):
                outbound.deliver_pending(db.engine)
            mine = [m for m in receiver.messages if rid in m]
            events = [m.split("\r")[0].split("|")[8] for m in mine]
            assert [e.split("^")[1] for e in events] == ["S12", "S13", "S15"]
    finally:
        outbound.uninstall_outbound()
