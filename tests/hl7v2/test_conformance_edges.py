"""HL7 v2 edge cases replayed from other parsers' bug reports: line feeds inside fields,
merges into oneself, enhanced acknowledgement NE/AL, de-duplication scope, the MLLP
listener's address."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import select

from fhir_server.hl7v2.er7 import parse
from fhir_server.hl7v2.inbound import process_message, process_message_ex
from fhir_server.hl7v2.listener import frame, start_mllp_server
from fhir_server.storage.schema import hl7_inbound

from .conftest import samples_or_skip
from .test_integration import server_apply  # noqa: F401 - fixture


def _msa(ack: str) -> list[str]:
    m = parse(ack).first("MSA")
    return [m.get(1), m.get(2)]


# ----------------------------------------------------------------------------- line feeds


def test_lf_inside_a_field_of_a_cr_message_is_data(engine, fake_apply):
    raw = ("MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101120000+0100||ADT^A04^ADT_A01|LF1|P|2.5\r"
           "PID|1||191212121212^^^^NNSWE||Tolvansson^Tolvan||19121212|M|||Storgatan 1\nlgh 1102^^Stockholm^^11122^SE"
           "||08-123456^PRN^PH\r"
           "PV1|1|O\r")
    ack = process_message(raw, engine=engine, apply_transaction=fake_apply)
    assert _msa(ack)[0] == "AA", ack
    patient = next(e["resource"] for e in fake_apply.bundles[0]["entry"] if e["resource"]["resourceType"] == "Patient")
    address = patient["address"][0]
    assert address["city"] == "Stockholm" and address["postalCode"] == "11122"
    assert "Storgatan 1\nlgh 1102" in address["line"]
    assert patient["telecom"][0]["value"] == "08-123456"


def test_lf_only_message_still_splits_segments(engine, fake_apply):
    raw = ("MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101120000+0100||ADT^A04^ADT_A01|LF2|P|2.5\n"
           "PID|1||191212121212^^^^NNSWE||Tolvansson^Tolvan\n")
    assert _msa(process_message(raw, engine=engine, apply_transaction=fake_apply))[0] == "AA"


def test_a_cut_segment_is_refused_not_acknowledged_aa(engine, fake_apply):
    # a stray CR inside PID-11: the rest would be a "segment" named "APT" -- refuse, never AA
    raw = ("MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101120000+0100||ADT^A04^ADT_A01|LF3|P|2.5\r"
           "PID|1||191212121212^^^^NNSWE||Tolvansson^Tolvan|||||Storgatan 1\rAPT 4^^Stockholm^^11122\r")
    ack = process_message(raw, engine=engine, apply_transaction=fake_apply)
    assert _msa(ack)[0] == "AR", ack
    assert fake_apply.bundles == []


@pytest.mark.parametrize("escape", ["\\X00\\", "\\X1B5B32304A\\", "\\X41071F\\"])
def test_a_hex_escape_decoding_to_a_control_character_is_refused(engine, fake_apply, escape):
    raw = ("MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101||ADT^A01|HEX" + str(uuid.uuid4().int % 10**8) + "|P|2.5\r"
           "PID|1||E1^^^X^MR||Do" + escape + "e^J\r")
    ack = process_message(raw, engine=engine, apply_transaction=fake_apply)
    assert _msa(ack)[0] == "AR", ack
    assert "control character" in parse(ack).first("ERR").get(8) or "control character" in ack
    assert fake_apply.bundles == []


def test_hex_escapes_of_text_line_breaks_and_delimiters_still_map(engine, fake_apply):
    raw = ("MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101||ADT^A01|HEXOK1|P|2.5\r"
           "PID|1||E1^^^X^MR||\\X53\\mith\\X0D\\Jr^J\r")
    assert _msa(process_message(raw, engine=engine, apply_transaction=fake_apply))[0] == "AA"
    patient = next(e["resource"] for e in fake_apply.bundles[0]["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient["name"][0]["family"] == "Smith\rJr"


# ----------------------------------------------------------------------------- A40 into itself


def _merge(a: str, b: str, control: str) -> str:
    return (f"MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101||ADT^A40^ADT_A39|{control}|P|2.5\r"
            f"EVN|A40|20240101\rPID|1||{a}^^^HOSP^MR||Doe^John\rMRG|{b}^^^HOSP^MR\r")


def test_a40_merge_into_itself_is_refused_with_err_on_mrg1(client, engine, server_apply):  # noqa: F811
    mark = uuid.uuid4().hex[:6]
    a = f"S{mark}"
    create = (f"MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101||ADT^A04^ADT_A01|s1{mark}|P|2.5\r"
              f"PID|1||{a}^^^HOSP^MR||Doe^John\r")
    assert _msa(process_message(create, engine=engine, apply_transaction=server_apply))[0] == "AA"
    ack = process_message(_merge(a, a, f"s2{mark}"), engine=engine, apply_transaction=server_apply)
    msg = parse(ack)
    assert msg.first("MSA").get(1) == "AE", ack
    err = msg.first("ERR")
    assert err.get(2, 1) == "MRG" and err.get(2, 3) == "1"
    assert "itself" in err.get(8)
    patient = client.get(f"/fhir/Patient?identifier={a}").json()["entry"][0]["resource"]
    assert patient.get("active") is not False and "link" not in patient  # untouched


def test_a40_merge_of_two_identifiers_of_one_patient_is_refused(client, engine, server_apply):  # noqa: F811
    """MRG-1 differs from PID-3 as text but names the same Patient: the transaction's
    one-entry-per-resource rule refuses it (AE), nothing is written."""
    mark = uuid.uuid4().hex[:6]
    a, b = f"P{mark}", f"Q{mark}"
    create = (f"MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101||ADT^A04^ADT_A01|t1{mark}|P|2.5\r"
              f"PID|1||{a}^^^HOSP^MR~{b}^^^HOSP^MR||Doe^John\r")
    assert _msa(process_message(create, engine=engine, apply_transaction=server_apply))[0] == "AA"
    ack = process_message(_merge(a, b, f"t2{mark}"), engine=engine, apply_transaction=server_apply)
    assert _msa(ack)[0] == "AE", ack
    patient = client.get(f"/fhir/Patient?identifier={a}").json()["entry"][0]["resource"]
    assert "link" not in patient and patient["meta"]["versionId"] == "1"


# ----------------------------------------------------------------------------- enhanced mode


def _adt(control: str, msh15: str, msh16: str, sender: str = "LAB|HOSP") -> str:
    return (f"MSH|^~\\&|{sender}|FHIR|SRV|20240101120000+0100||ADT^A04^ADT_A01|{control}|P|2.5|||{msh15}|{msh16}\r"
            "PID|1||191212121212^^^^NNSWE||Tolvansson^Tolvan\r")


@pytest.mark.parametrize("msh15,msh16,expected", [
    ("NE", "AL", ["AA"]),
    ("AL", "AL", ["CA", "AA"]),
    ("AL", "NE", ["CA"]),
    ("NE", "NE", []),
    ("NE", "ER", []),
    ("", "", ["AA"]),
])
def test_enhanced_mode_replies(engine, fake_apply, msh15, msh16, expected):
    res = process_message_ex(_adt(f"E{msh15}{msh16}", msh15, msh16), engine=engine, apply_transaction=fake_apply)
    assert [_msa(a)[0] for a in res.replies()] == expected


def test_enhanced_mode_application_error_with_er(engine, fake_apply):
    raw = _adt("EER", "NE", "ER").replace("ADT^A04^ADT_A01", "ZZZ^Z01")
    res = process_message_ex(raw, engine=engine, apply_transaction=fake_apply)
    assert [_msa(a)[0] for a in res.replies()] == ["AR"]


def test_oul_r22_samples_ne_al_get_an_answer_over_mllp(engine, fake_apply):
    import asyncio

    from fhir_server.hl7v2.inbound import mllp_handler

    d = samples_or_skip()
    raws = [(d / n).read_bytes() for n in ("OUL-R22-01.hl7", "OUL-R22-02.hl7")]
    assert all(parse(r).msh.get(15) == "NE" and parse(r).msh.get(16) == "AL" for r in raws)

    async def run() -> list[str]:
        server = await start_mllp_server("127.0.0.1", 0, mllp_handler(engine, fake_apply))
        port = server.sockets[0].getsockname()[1]
        answers = []
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for raw in raws:
                writer.write(frame(raw))
                await writer.drain()
                data = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), timeout=10)
                answers.append(data[1:-2].decode())
            writer.close()
        finally:
            server.close()
            await server.wait_closed()
        return answers

    answers = asyncio.run(run())
    for raw, ack in zip(raws, answers):
        code, control = _msa(ack)
        assert control == parse(raw).control_id
        assert code in ("AA", "AR", "AE")  # the application ACK: never silence


# ----------------------------------------------------------------------------- de-duplication


def test_dedup_is_per_sending_application_and_facility(engine, fake_apply):
    for sender in ("LAB|HOSP", "LAB|OTHER", "LAB^1.2.3^ISO|HOSP", "LAB2|HOSP"):
        process_message(_adt("SAME", "", "", sender), engine=engine, apply_transaction=fake_apply)
    assert len(fake_apply.bundles) == 4  # four senders, one control id: four messages
    again = process_message_ex(_adt("SAME", "", "", "LAB|HOSP"), engine=engine, apply_transaction=fake_apply)
    assert again.duplicate and len(fake_apply.bundles) == 4
    with engine.connect() as conn:
        scopes = sorted(r.sender for r in conn.execute(select(hl7_inbound)))
    assert scopes == ["LAB2|HOSP", "LAB^1.2.3^ISO|HOSP", "LAB|HOSP", "LAB|OTHER"]


def test_dedup_does_not_depend_on_the_connection(engine, fake_apply):
    raw = _adt("CONN", "", "", "|")  # no MSH-3/MSH-4: the key is still (MSH-3, MSH-4, MSH-10)
    process_message(raw, engine=engine, apply_transaction=fake_apply, sender_hint="10.0.0.1:5000")
    second = process_message_ex(raw, engine=engine, apply_transaction=fake_apply, sender_hint="10.0.0.1:5001")
    assert second.duplicate and len(fake_apply.bundles) == 1


# ----------------------------------------------------------------------------- the listener's address


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _listen_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port` (from /proc/net/tcp*)."""
    out = set()
    for path, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, hexport = parts[1].split(":")
            if int(hexport, 16) == port and parts[3] == "0A":
                out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]) if width == 8 else addr)
    return out


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs /proc/net/tcp to see bound addresses")
@pytest.mark.parametrize("extra,expected", [([], "127.0.0.1"), (["--mllp-host", "127.0.0.2"], "127.0.0.2")])
def test_mllp_listener_binds_to_the_serve_host(tmp_path, extra, expected):
    http_port, mllp_port = _free_port(), _free_port()
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "FHIR_SERVER_RUN_BACKGROUND_JOBS": "false", "FHIR_SERVER_EXPORT_DIR": str(tmp_path / "export")}
    env.pop("FHIR_SERVER_MLLP_HOST", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_server.cli", "serve", "--host", "127.0.0.1", "--port", str(http_port),
         "--mllp-port", str(mllp_port), "--log-level", "warning", *extra],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not _listen_addresses(mllp_port):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        assert _listen_addresses(mllp_port) == {expected}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
