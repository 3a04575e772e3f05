"""Outbound SIU: subscriber fills the outbox; delivery keeps order per appointment and retries."""

from __future__ import annotations

import socket
import threading
from datetime import datetime, timedelta, timezone

import pytest

from fhir_server import events
from fhir_server.hl7v2.er7 import parse
from fhir_server.hl7v2.inbound import write_conn
from fhir_server.hl7v2.listener import frame, read_frame
from fhir_server.hl7v2.outbound import (build_siu, deliver_pending, install_outbound, outbox_status,
                                        retry_failed, uninstall_outbound)


class Receiver:
    """A tiny MLLP receiver on loopback that answers AA, or AE while `reject` is set."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received: list[str] = []
        self.reject = False
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    data = read_frame(conn).decode()
                except ConnectionError:
                    continue
                msg = parse(data)
                code = "AE" if self.reject else "AA"
                if not self.reject:
                    self.received.append(data)
                conn.sendall(frame(f"MSH|^~\\&|R|R|S|S|20240101||ACK|X|P|2.5\rMSA|{code}|{msg.control_id}\r".encode()))

    def close(self):
        self._stop = True
        self.sock.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


APPT = {"resourceType": "Appointment", "id": "a1", "status": "booked",
        "start": "2024-05-01T09:00:00+02:00", "end": "2024-05-01T09:30:00+02:00",
        "participant": [{"actor": {"reference": "Patient/p1", "display": "Tolvan"}, "status": "accepted"}]}


def _change(method, old, new, rid="a1"):
    return events.ResourceChange("Appointment", rid, 1, method, old, new)


def _emit(engine, change):
    with write_conn(engine) as conn:
        events.emit(conn, change)


def test_build_siu_is_valid_v25():
    text = build_siu(APPT, "S12", control_id="C1")
    msg = parse(text)
    assert msg.message_type == "SIU^S12" and msg.version == "2.5"
    sch = msg.first("SCH")
    assert sch.get(2) == "a1" and sch.get(11, 4) == "20240501090000+0200" and sch.get(25) == "Booked"
    assert msg.first("PID").get(3) == "p1"
    assert [s.name for s in msg.segments] == ["MSH", "SCH", "TQ1", "PID", "RGS", "AIS"]
    from hl7apy.parser import parse_message
    parse_message(text.replace("\r", "\r"), find_groups=True)  # hl7apy accepts its own output


def test_outbox_order_and_retry(engine, receiver):
    dest = f"127.0.0.1:{receiver.port}"
    sub = install_outbound([dest])
    try:
        moved = dict(APPT, start="2024-05-02T09:00:00+02:00", end="2024-05-02T09:30:00+02:00")
        cancelled = dict(moved, status="cancelled")
        _emit(engine, _change("create", None, APPT))
        _emit(engine, _change("update", APPT, dict(APPT, comment="no change in time")))  # no message
        _emit(engine, _change("update", APPT, moved))
        _emit(engine, _change("update", moved, cancelled))
        _emit(engine, _change("create", None, dict(APPT, id="b2"), rid="b2"))
    finally:
        uninstall_outbound(sub)
    rows = outbox_status(engine)
    assert [(r["ordering_key"], r["trigger"].split("^")[1]) for r in rows] == [
        ("Appointment/a1", "S12"), ("Appointment/a1", "S13"), ("Appointment/a1", "S15"), ("Appointment/b2", "S12")]

    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    receiver.reject = True
    stats = deliver_pending(engine, now=t0, base_delay=10)
    # Only the head of each appointment's queue is tried; both fail and back off.
    assert stats == {"sent": 0, "retry": 2, "failed": 0, "skipped": 2}
    rows = outbox_status(engine)
    assert rows[0]["attempts"] == 1 and "ACK AE" in rows[0]["last_error"]
    receiver.reject = False
    assert deliver_pending(engine, now=t0 + timedelta(seconds=5))["sent"] == 0  # not yet due
    stats = deliver_pending(engine, now=t0 + timedelta(seconds=11))
    assert stats["sent"] == 2  # the S12s
    deliver_pending(engine, now=t0 + timedelta(seconds=12))
    deliver_pending(engine, now=t0 + timedelta(seconds=13))
    triggers = [parse(m).trigger for m in receiver.received]
    assert triggers == ["S12", "S12", "S13", "S15"]
    assert [parse(m).first("SCH").get(2) for m in receiver.received] == ["a1", "b2", "a1", "a1"]
    assert all(r["status"] == "sent" for r in outbox_status(engine))


def test_failed_blocks_later_until_requeued(engine, receiver):
    sub = install_outbound([f"127.0.0.1:{receiver.port}"])
    try:
        _emit(engine, _change("create", None, APPT))
        _emit(engine, _change("update", APPT, dict(APPT, status="cancelled")))
    finally:
        uninstall_outbound(sub)
    t = datetime(2030, 1, 1, tzinfo=timezone.utc)
    receiver.reject = True
    assert deliver_pending(engine, now=t, max_attempts=1)["failed"] == 1
    receiver.reject = False
    assert deliver_pending(engine, now=t)["sent"] == 0  # S15 waits behind the failed S12
    assert retry_failed(engine) == 1
    deliver_pending(engine, now=t + timedelta(seconds=1))
    deliver_pending(engine, now=t + timedelta(seconds=2))
    assert [parse(m).trigger for m in receiver.received] == ["S12", "S15"]


def test_unreachable_destination_retries(engine):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here
    sub = install_outbound([f"127.0.0.1:{port}"])
    try:
        _emit(engine, _change("create", None, APPT))
    finally:
        uninstall_outbound(sub)
    stats = deliver_pending(engine, now=datetime(2030, 1, 1, tzinfo=timezone.utc), timeout=1)
    assert stats["retry"] == 1
    (row,) = outbox_status(engine)
    assert row["status"] == "pending" and "Connection" in row["last_error"]


def test_inbound_changes_not_echoed(engine, receiver):
    from fhir_server.hl7v2.inbound import applying_inbound

    sub = install_outbound([f"127.0.0.1:{receiver.port}"])
    token = applying_inbound.set("X1")
    try:
        _emit(engine, _change("create", None, APPT))
    finally:
        applying_inbound.reset(token)
        uninstall_outbound(sub)
    assert outbox_status(engine) == []
