"""Inbound messages applied through the real server transaction (over the test client)."""

from __future__ import annotations

import uuid

import pytest

from fhir_server.errors import FhirError, Issue
from fhir_server.hl7v2.er7 import parse
from fhir_server.hl7v2.inbound import process_message

from .conftest import samples_or_skip


@pytest.fixture
def server_apply(client):
    def apply(bundle: dict) -> dict:
        r = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
        if r.status_code >= 400:
            body = r.json()
            raise FhirError(r.status_code, [Issue("error", i.get("code", "processing"), i.get("diagnostics", ""),
                                                  i.get("expression")) for i in body.get("issue", [])])
        return r.json()
    return apply


def _code(ack: str) -> str:
    return parse(ack).first("MSA").get(1)


def _adt(pnr: str, control: str, family: str, mtype="ADT^A04^ADT_A01") -> str:
    return (f"MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101120000+0100||{mtype}|{control}|P|2.5\r"
            f"PID|1||{pnr}^^^&1.2.752.129.2.1.3.1&ISO^NNSWE||{family}^Tolvan||19121212|M\r"
            "NK1|1|Tolvansson^Anna|SPO^Spouse^HL70063\r"
            "PV1|1|O|Mottagning^Rum 1^^Karolinska\r")


def test_adt_create_then_update_same_patient(client, engine, server_apply):
    mark = uuid.uuid4().hex[:6]
    ack1 = process_message(_adt("191212121212", f"I1{mark}", "Tolvansson"), engine=engine, apply_transaction=server_apply)
    assert _code(ack1) == "AA", ack1
    ack2 = process_message(_adt("191212121212", f"I2{mark}", "Tolvansson-Ny", "ADT^A08^ADT_A01"),
                           engine=engine, apply_transaction=server_apply)
    assert _code(ack2) == "AA", ack2
    found = client.get("/fhir/Patient?identifier=http://electronichealth.se/identifier/personnummer|191212121212").json()
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["name"][0]["family"] == "Tolvansson-Ny"
    pid = found["entry"][0]["resource"]["id"]
    rps = client.get(f"/fhir/RelatedPerson?patient=Patient/{pid}").json()
    assert rps["total"] == 1  # the A08 updated the NK1 RelatedPerson, not duplicated it


def test_siu_samples_through_server(client, engine, server_apply):
    d = samples_or_skip()
    for name in ("SIU-S12-01.hl7", "SIU-S13-01.hl7", "SIU-S15-01.hl7"):
        ack = process_message((d / name).read_bytes(), engine=engine, apply_transaction=server_apply)
        assert _code(ack) == "AA", (name, ack)
    appts = client.get("/fhir/Appointment?identifier=36996").json()
    assert appts["total"] == 1 and appts["entry"][0]["resource"]["status"] == "cancelled"


def test_a40_merge_through_server(client, engine, server_apply):
    mark = uuid.uuid4().hex[:6]
    a = f"A{mark}"
    b = f"B{mark}"
    mk = lambda ident, control: (f"MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101||ADT^A04^ADT_A01|{control}|P|2.5\r"
                                 f"PID|1||{ident}^^^HOSP^MR||Doe^John\r")
    assert _code(process_message(mk(a, f"m1{mark}"), engine=engine, apply_transaction=server_apply)) == "AA"
    assert _code(process_message(mk(b, f"m2{mark}"), engine=engine, apply_transaction=server_apply)) == "AA"
    merge = (f"MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101||ADT^A40^ADT_A39|m3{mark}|P|2.5\r"
             f"EVN|A40|20240101\rPID|1||{a}^^^HOSP^MR||Doe^John\rMRG|{b}^^^HOSP^MR\r")
    ack = process_message(merge, engine=engine, apply_transaction=server_apply)
    assert _code(ack) == "AA", ack
    src = client.get(f"/fhir/Patient?identifier={b}").json()["entry"][0]["resource"]
    tgt = client.get(f"/fhir/Patient?identifier={a}").json()["entry"][0]["resource"]
    assert src["active"] is False
    assert src["link"][0] == {"other": {"reference": f"Patient/{tgt['id']}"}, "type": "replaced-by"}
    assert tgt["link"][0] == {"other": {"reference": f"Patient/{src['id']}"}, "type": "replaces"}
