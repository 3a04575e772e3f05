"""Inbound: ACKs for every sample, field-level mapping checks, national ids, de-duplication, replay."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fhir_server.hl7v2.er7 import parse
from fhir_server.hl7v2.inbound import process_message, process_message_ex, replay
from fhir_server.hl7v2.mapping import map_message, supported_types
from fhir_server.storage.schema import hl7_inbound

from .conftest import SAMPLES, fhir_failure, samples_or_skip


def _msa(ack: str) -> list[str]:
    msg = parse(ack)
    assert msg.message_code == "ACK"
    msa = msg.first("MSA")
    return [msa.get(1), msa.get(2)]


def _load(name: str) -> bytes:
    return (samples_or_skip() / name).read_bytes()


def _entries(bundle: dict, rtype: str) -> list[dict]:
    return [e for e in bundle["entry"] if e.get("resource", {}).get("resourceType") == rtype]


SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.hl7")) if SAMPLES.is_dir() else ["(none)"]


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_every_sample_gets_a_wellformed_ack(name, engine, fake_apply):
    raw = _load(name)
    ack = process_message(raw, engine=engine, apply_transaction=fake_apply)
    code, control = _msa(ack)
    msg = parse(raw)
    assert control == msg.control_id
    enhanced = bool(msg.msh.get(15) or msg.msh.get(16))
    if enhanced:  # MSH-15/16 ask for enhanced mode: commit-level codes
        code = {"CA": "AA", "CE": "AE", "CR": "AR"}[code]
    if msg.message_type in supported_types():
        assert code == "AA", ack
        assert len(fake_apply.bundles) == 1
    else:
        assert code == "AR"
        assert parse(ack).first("ERR").get(3, 1) in ("200", "201")
        assert fake_apply.bundles == []
    with engine.connect() as conn:
        row = conn.execute(select(hl7_inbound)).one()
    assert row.raw.startswith("MSH") and row.ack == ack
    assert row.status == ("applied" if code == "AA" else "rejected")
    assert row.sender == msg.dedup_scope and row.control_id == msg.control_id  # (MSH-3, MSH-4) as sent


def test_adt_a01_patient_related_person_encounter(engine, fake_apply):
    process_message(_load("ADT-A01-01.hl7"), engine=engine, apply_transaction=fake_apply)
    bundle = fake_apply.bundles[0]
    (pat_e,) = _entries(bundle, "Patient")
    pat = pat_e["resource"]
    assert pat_e["request"] == {"method": "PUT", "url": "Patient?identifier=urn:x-hl7v2:namespace:test1|PATID1234"}
    assert pat["name"][0]["family"] == "EVERYMAN" and pat["name"][0]["given"] == ["ADAM", "A"]
    assert pat["gender"] == "male"
    assert pat["birthDate"] == "1988-08-18"
    assert {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123456789"}.items() <= pat["identifier"][1].items()
    assert pat["maritalStatus"]["coding"][0]["code"] == "M"
    assert pat["address"][0]["city"] == "Ann Arbor"
    (rp,) = _entries(bundle, "RelatedPerson")
    assert rp["resource"]["patient"] == {"reference": pat_e["fullUrl"]}
    assert rp["resource"]["name"][0]["family"] == "Evan"
    assert rp["request"]["method"] == "PUT"
    (enc,) = _entries(bundle, "Encounter")
    assert enc["resource"]["subject"] == {"reference": pat_e["fullUrl"]}
    assert enc["resource"]["class"]["code"] == "PRENC"  # PV1-2 = P
    assert enc["resource"]["status"] == "planned"  # PV1-2 = P, PV1-45 empty
    # Practitioners and Locations are conditional creates referenced by fullUrl
    urls = {e["fullUrl"] for e in bundle["entry"] if "fullUrl" in e}
    for part in enc["resource"]["participant"]:
        if "reference" in part["individual"]:
            assert part["individual"]["reference"] in urls


@pytest.mark.parametrize("name,trigger", [("ADT-A04-01.hl7", "A04"), ("ADT-A08-01.hl7", "A08"),
                                          ("ADT-A28-01.hl7", "A28"), ("ADT-A31-01.hl7", "A31"),
                                          ("ADT04-251.hl7", "A04")])
def test_adt_variants_produce_patient(name, trigger, engine, fake_apply):
    ack = process_message(_load(name), engine=engine, apply_transaction=fake_apply)
    assert _msa(ack)[0] == "AA"
    (pat,) = _entries(fake_apply.bundles[0], "Patient")
    assert pat["request"]["method"] == "PUT" and pat["request"]["url"].startswith("Patient?identifier=")


def test_adt04_251_with_bom_and_v23(engine, fake_apply):
    ack = process_message(_load("ADT04-251.hl7"), engine=engine, apply_transaction=fake_apply)
    assert _msa(ack) == ["AA", "1270326314"]
    pat = _entries(fake_apply.bundles[0], "Patient")[0]["resource"]
    assert pat["name"][0] == {"family": "Doe", "given": ["Jane"]}
    assert pat["gender"] == "female" and pat["birthDate"] == "1978-01-01"
    rp = _entries(fake_apply.bundles[0], "RelatedPerson")[0]
    # No NK1 identifier: a synthetic one keeps repeated A08s idempotent.
    assert rp["request"]["url"].startswith("RelatedPerson?identifier=urn:x-hl7v2:nk1|")


def test_siu_s12_appointment(engine, fake_apply):
    process_message(_load("SIU-S12-01.hl7"), engine=engine, apply_transaction=fake_apply)
    bundle = fake_apply.bundles[0]
    (appt_e,) = _entries(bundle, "Appointment")
    appt = appt_e["resource"]
    assert appt_e["request"]["method"] == "PUT"
    assert appt_e["request"]["url"].endswith("|36996")  # filler id SCH-2
    assert appt["status"] == "booked"
    assert appt["start"] == "2020-10-01T11:26:00+02:15"  # SCH-11.4
    assert appt["end"] == "2020-10-09T11:26:00+02:15"
    assert "minutesDuration" not in appt  # SCH-10 unit is not minutes
    ids = {i["value"]: i["type"]["coding"][0]["code"] for i in appt["identifier"]}
    assert ids == {"12345": "PLAC", "36996": "FILL"}
    (pat_e,) = _entries(bundle, "Patient")
    assert pat_e["request"]["method"] == "POST" and "ifNoneExist" in pat_e["request"]
    actors = [p["actor"] for p in appt["participant"]]
    assert {"reference": pat_e["fullUrl"]} in actors
    kinds = {a.get("reference") for a in actors}
    prac = [e["fullUrl"] for e in _entries(bundle, "Practitioner")]
    locs = [e["fullUrl"] for e in _entries(bundle, "Location")]
    assert kinds & set(prac) and kinds & set(locs)
    assert appt["serviceType"][0]["coding"][0] == {"code": "76164006", "display": "Biopsy of colon (procedure)",
                                                   "system": "http://snomed.info/sct"}
    assert all(p["status"] in ("accepted", "tentative", "declined", "needs-action") for p in appt["participant"])


@pytest.mark.parametrize("name,status", [("SIU-S13-01.hl7", "booked"), ("SIU-S14-01.hl7", "booked"),
                                         ("SIU-S15-01.hl7", "cancelled"), ("SIU-S26-01.hl7", "noshow")])
def test_siu_status_by_trigger(name, status, engine, fake_apply):
    process_message(_load(name), engine=engine, apply_transaction=fake_apply)
    (appt,) = _entries(fake_apply.bundles[0], "Appointment")
    assert appt["resource"]["status"] == status


def test_siu_s17_deletes(engine, fake_apply):
    process_message(_load("SIU-S17-01.hl7"), engine=engine, apply_transaction=fake_apply)
    dels = [e for e in fake_apply.bundles[0]["entry"] if e["request"]["method"] == "DELETE"]
    assert len(dels) == 1 and dels[0]["request"]["url"].startswith("Appointment?identifier=")


def _adt(pid3: str, control: str = "C1", extra: str = "", msh15: str = "", msh16: str = "", mtype="ADT^A04^ADT_A01") -> str:
    return "\r".join([
        f"MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101120000+0100||{mtype}|{control}|P|2.5|||{msh15}|{msh16}",
        "EVN|A04|20240101120000",
        f"PID|1||{pid3}||Tolvansson^Tolvan^^^^^L||19121212|M|||Storgatan 1^^Stockholm^^11122^SE",
        "PV1|1|O",
    ]) + extra


@pytest.mark.parametrize("pid3,system,value", [
    ("191212121212^^^&1.2.752.129.2.1.3.1&ISO^NNSWE", "http://electronichealth.se/identifier/personnummer", "191212121212"),
    ("191212121212^^^^NNSWE", "http://electronichealth.se/identifier/personnummer", "191212121212"),
    ("44051401359^^^&2.16.840.1.113883.3.4424.1.1.616&ISO^NNPOL", "urn:oid:2.16.840.1.113883.3.4424.1.1.616", "44051401359"),
    ("44051401359^^^^NNPOL", "urn:oid:2.16.840.1.113883.3.4424.1.1.616", "44051401359"),
    ("0707614285^^^&1.2.208.176.1.2&ISO", "urn:oid:1.2.208.176.1.2", "0707614285"),
    ("0707614285^^^^NNDNK", "urn:oid:1.2.208.176.1.2", "0707614285"),
    ("4711^^^&1.2.3.4.5&ISO^MR", "urn:oid:1.2.3.4.5", "4711"),
    ("4711^^^KAROLINSKA^MR", "urn:x-hl7v2:namespace:KAROLINSKA", "4711"),
])
def test_national_identifiers(pid3, system, value, engine, fake_apply):
    ack = process_message(_adt(pid3), engine=engine, apply_transaction=fake_apply)
    assert _msa(ack)[0] == "AA", ack
    pat = _entries(fake_apply.bundles[0], "Patient")[0]
    assert pat["resource"]["identifier"][0]["system"] == system
    assert pat["resource"]["identifier"][0]["value"] == value
    assert pat["request"]["url"] == f"Patient?identifier={system}|{value}"


def test_invalid_national_identifier_is_AE_with_field(engine, fake_apply):
    ack = process_message(_adt("44051401358^^^&2.16.840.1.113883.3.4424.1.1.616&ISO^NNPOL"),
                          engine=engine, apply_transaction=fake_apply)
    msg = parse(ack)
    assert msg.first("MSA").get(1) == "AE"
    err = msg.first("ERR")
    assert err.raw(2) == "PID^1^3^1" and "PESEL" in err.get(8)
    assert fake_apply.bundles == []


def test_missing_pid_is_AE(engine, fake_apply):
    raw = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X9|P|2.5\rEVN|A01|20240101\r"
    msg = parse(process_message(raw, engine=engine, apply_transaction=fake_apply))
    assert msg.first("MSA").get(1) == "AE" and msg.first("ERR").get(2) == "PID"


def test_unknown_type_is_AR_and_nothing_applied(engine, fake_apply):
    raw = _adt("1^^^X", mtype="ZZZ^Z01")
    msg = parse(process_message(raw, engine=engine, apply_transaction=fake_apply))
    assert msg.first("MSA").get(1) == "AR"
    assert msg.first("ERR").get(3, 1) == "200" and "ZZZ" in msg.first("ERR").get(8)
    assert fake_apply.bundles == []


def test_garbage_is_AR(engine, fake_apply):
    ack = process_message(b"\x00\x01hello world", engine=engine, apply_transaction=fake_apply)
    assert parse(ack).first("MSA").get(1) == "AR"


def test_line_endings_and_escapes(engine, fake_apply):
    raw = _adt("191212121212^^^^NNSWE").replace("Tolvansson", "Tolv\\T\\ansson\\F\\x").replace("\r", "\r\n")
    assert _msa(process_message(raw.encode("utf-8"), engine=engine, apply_transaction=fake_apply))[0] == "AA"
    pat = _entries(fake_apply.bundles[0], "Patient")[0]["resource"]
    assert pat["name"][0]["family"] == "Tolv&ansson|x"


def test_enhanced_mode_ack(engine, fake_apply):
    ok = process_message(_adt("191212121212^^^^NNSWE", control="E1", msh15="AL", msh16="NE"),
                         engine=engine, apply_transaction=fake_apply)
    assert _msa(ok) == ["CA", "E1"]
    bad = process_message(_adt("1^^^X", control="E2", msh15="AL", mtype="ZZZ^Z01"),
                          engine=engine, apply_transaction=fake_apply)
    assert _msa(bad)[0] == "CR"
    res = process_message_ex(_adt("191212121212^^^^NNSWE", control="E3", msh15="ER", msh16="NE"),
                             engine=engine, apply_transaction=fake_apply)
    assert res.code == "CA" and res.send is False  # ER: acknowledge errors only


def test_duplicate_control_id_not_applied_twice(engine, fake_apply):
    raw = _adt("191212121212^^^^NNSWE", control="DUP1")
    first = process_message(raw, engine=engine, apply_transaction=fake_apply)
    second = process_message(raw, engine=engine, apply_transaction=fake_apply)
    assert first == second
    assert len(fake_apply.bundles) == 1
    # Same control id from another sender is a different message.
    other = raw.replace("|LAB|HOSP|", "|LAB2|HOSP|")
    process_message(other, engine=engine, apply_transaction=fake_apply)
    assert len(fake_apply.bundles) == 2


def test_failed_apply_is_AE_stored_and_replayable(engine, fake_apply):
    fake_apply.fail_with = fhir_failure("database unavailable")
    ack = process_message(_adt("191212121212^^^^NNSWE", control="F1"), engine=engine, apply_transaction=fake_apply)
    msg = parse(ack)
    assert msg.first("MSA").get(1) == "AE" and "database unavailable" in msg.first("ERR").get(8)
    with engine.connect() as conn:
        row = conn.execute(select(hl7_inbound)).one()
    assert row.status == "error" and row.ack_code == "AE"
    fake_apply.fail_with = None
    out = replay(engine, None, apply_transaction=fake_apply)
    assert [r["status"] for r in out] == ["applied"]
    assert len(fake_apply.bundles) == 1
    # An applied message is not replayed again without force.
    assert replay(engine, row.id, apply_transaction=fake_apply)[0]["error"].startswith("already applied")
    assert len(fake_apply.bundles) == 1
    # And a retransmission now gets the stored AA.
    again = process_message(_adt("191212121212^^^^NNSWE", control="F1"), engine=engine, apply_transaction=fake_apply)
    assert _msa(again)[0] == "AA" and len(fake_apply.bundles) == 1


def test_a40_merge_entries(engine, fake_apply):
    process_message(_load("ADT-A40-01.hl7"), engine=engine, apply_transaction=fake_apply)
    bundle = fake_apply.bundles[0]
    put, patch = bundle["entry"][0], bundle["entry"][1]
    assert put["request"] == {"method": "PUT", "url": "Patient?identifier=urn:x-hl7v2:namespace:BCBS|12345"}
    assert put["resource"]["link"] == [{"other": {"reference": "Patient?identifier=urn:x-hl7v2:namespace:BCBS|56789"},
                                        "type": "replaces"}]
    assert patch["request"] == {"method": "PATCH", "url": "Patient?identifier=urn:x-hl7v2:namespace:BCBS|56789"}
    ops = patch["resource"]["parameter"]
    assert ops[1]["part"][2:] == [{"name": "name", "valueString": "active"}, {"name": "value", "valueBoolean": False}]
    link = ops[2]["part"][3]["part"]
    assert link == [{"name": "other", "valueReference": {"reference": put["fullUrl"]}},
                    {"name": "type", "valueCode": "replaced-by"}]


def test_a40_patch_applies_with_server_fhirpath_patch(engine, fake_apply):
    from fhir_server.rest.fhirpath_patch import apply_fhirpath_patch

    process_message(_load("ADT-A40-01.hl7"), engine=engine, apply_transaction=fake_apply)
    patch = fake_apply.bundles[0]["entry"][1]["resource"]
    out = apply_fhirpath_patch({"resourceType": "Patient", "id": "x", "active": True}, patch)
    assert out["active"] is False and out["link"][0]["type"] == "replaced-by"


def test_slot_marked_busy_and_free(engine, fake_apply):
    base = ("MSH|^~\\&|SCHED|CLINIC|FHIR|SRV|20240101120000+0100||SIU^{t}^SIU_S12|{c}|P|2.5\r"
            "SCH|P1|F1||||||||||^^^20240105090000+0100^20240105093000+0100|||||||||||||{st}\r"
            "PID|1||191212121212^^^^NNSWE||Tolvansson^Tolvan\r")
    base = base.replace("SCH|P1|F1||||", "SCH|P1|F1|||SLOT-7^^urn:slots|")
    process_message(base.format(t="S12", c="s1", st="Booked"), engine=engine, apply_transaction=fake_apply)
    process_message(base.format(t="S15", c="s2", st="Cancelled"), engine=engine, apply_transaction=fake_apply)
    slot_ops = []
    for b in fake_apply.bundles:
        (appt,) = _entries(b, "Appointment")
        assert appt["resource"]["slot"] == [{"reference": "Slot?identifier=urn:slots|SLOT-7"}]
        (p,) = [e for e in b["entry"] if e["request"]["url"].startswith("Slot?")]
        slot_ops.append(p["resource"]["parameter"][0]["part"][2]["valueCode"])
    assert slot_ops == ["busy", "free"]


def test_parse_timing_report():
    """Not an assertion on speed: documents the own parser against hl7apy (see -s output)."""
    import time

    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    from fhir_server.hl7v2.er7 import normalise

    files = sorted(samples_or_skip().glob("*.hl7"))[:40]
    texts = [normalise(f.read_bytes().decode("utf-8-sig")) for f in files]
    t0 = time.perf_counter()
    for t in texts:
        m = parse(t)
        if m.message_type in supported_types():
            map_message(m)
    own = (time.perf_counter() - t0) / len(texts) * 1000
    res = {}
    for fg in (True, False):
        t0 = time.perf_counter()
        for t in texts[:10]:
            try:
                parse_message(t, find_groups=fg, validation_level=VALIDATION_LEVEL.TOLERANT)
            except Exception:
                pass
        res[fg] = (time.perf_counter() - t0) / 10 * 1000
    print(f"\nown parse+map {own:.2f} ms/msg; hl7apy find_groups=True {res[True]:.1f} ms, False {res[False]:.1f} ms")
    assert own < res[False]
