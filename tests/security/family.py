"""Test data for the acting-for rules: valid national numbers per country, Patients,
RelatedPersons and Consents, written through the API with a system token."""

from __future__ import annotations

import uuid
from datetime import date

from stdnum import luhn
from stdnum.fi import hetu
from stdnum.no import fodselsnummer
from stdnum.pl import pesel

SYSTEMS = {
    "SE": "http://electronichealth.se/identifier/personnummer",
    "DK": "urn:oid:1.2.208.176.1.2",
    "PL": "urn:oid:2.16.840.1.113883.3.4424.1.1.616",
    "NO": "urn:oid:2.16.578.1.12.4.1.4.1",
    "FI": "urn:oid:1.2.246.21",
}
AGES = {"SE": 13, "DK": 15, "PL": 16, "NO": 16, "FI": 15}
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"

_serial = iter(range(101, 899))


def national_number(country: str, born: date) -> str:
    """A valid national number of `country` for someone born on `born` (2000-2035)."""
    n = next(_serial)
    yy, mm, dd = f"{born.year % 100:02d}", f"{born.month:02d}", f"{born.day:02d}"
    if country == "SE":
        nine = f"{yy}{mm}{dd}{n:03d}"
        return f"{born.year}{mm}{dd}{n:03d}{luhn.calc_check_digit(nine)}"
    modern = born.year >= 2000
    if country == "DK":
        return f"{dd}{mm}{yy}{4 if modern else 0}{n % 1000:03d}"  # 7th digit 4: born 2000-2036; 0: 1900s
    if country == "PL":
        body = f"{yy}{born.month + (20 if modern else 0):02d}{dd}{n % 10000:04d}"
        return body + pesel.calc_check_digit(body)
    if country == "NO":
        for _ in range(50):
            body = f"{dd}{mm}{yy}{(500 + n % 250) if modern else n % 500:03d}"
            try:
                c1 = fodselsnummer.calc_check_digit1(body)
                number = body + c1 + fodselsnummer.calc_check_digit2(body + c1)
                if fodselsnummer.is_valid(number):
                    return number
            except Exception:  # noqa: BLE001 - check digit 10: choose another individual number
                pass
            n += 1
        raise AssertionError("no valid fødselsnummer")
    if country == "FI":
        number = f"{dd}{mm}{yy}{'A' if modern else '-'}{n:03d}"
        number += "0123456789ABCDEFHJKLMNPRSTUVWXY"[int(f"{dd}{mm}{yy}{n:03d}") % 31]
        assert hetu.is_valid(number)
        return number
    raise ValueError(country)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def put(client, resource: dict) -> dict:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text
    return r.json()


def patient(client, country: str | None = None, born: date | None = None, birth_date_only: bool = False, name: str = "Child") -> tuple[str, str | None]:
    """(id, national number) of a new Patient."""
    pid = new_id("pat")
    res: dict = {"resourceType": "Patient", "id": pid, "name": [{"family": "Test", "given": [name]}]}
    number = None
    if country and born and not birth_date_only:
        number = national_number(country, born)
        res["identifier"] = [{"system": SYSTEMS[country], "value": number}]
    if born and (birth_date_only or not country):
        res["birthDate"] = born.isoformat()
    if birth_date_only and country:
        res["address"] = [{"country": country}]
    put(client, res)
    return pid, number


def related_person(client, child: str, codes: list[str] | None, *, identifier: tuple[str, str] | None = None, rid: str | None = None, active: bool = True) -> str:
    rid = rid or new_id("rp")
    res: dict = {"resourceType": "RelatedPerson", "id": rid, "active": active, "patient": {"reference": f"Patient/{child}"}}
    if codes:
        res["relationship"] = [{"coding": [{"system": ROLE, "code": c} for c in codes]}]
    if identifier:
        res["identifier"] = [{"system": identifier[0], "value": identifier[1]}]
    put(client, res)
    return rid


def consent(client, patient_id: str, provision: dict, *, status: str = "active", cid: str | None = None) -> str:
    cid = cid or new_id("consent")
    put(client, {
        "resourceType": "Consent", "id": cid, "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "provision": provision,
    })
    return cid


def proxy_provision(actor: str, role: str = "GUARD", kind: str = "permit", data: list[str] | None = None,
                    start: str | None = None, end: str | None = None, actions: list[str] | None = None) -> dict:
    p: dict = {"type": kind, "actor": [{"role": {"coding": [{"system": ROLE, "code": role}]}, "reference": {"reference": actor}}]}
    if start or end:
        p["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    if data:
        p["data"] = [{"meaning": "related", "reference": {"reference": d}} for d in data]
    if actions:
        p["action"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": a}]} for a in actions]
    return p


def exported(c, app, params: dict | None = None) -> dict[str, set[str]]:
    """Run a Patient-level `$export` as client `c` (the job run in-process between polls)
    and return the exported ids by resource type."""
    import json

    from fhir_server.jobs.runner import run_pending

    r = c.get("/fhir/Patient/$export", params=params or {}, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
    assert r.status_code == 202, r.text
    status = r.headers["content-location"]
    for _ in range(10):
        r = c.get(status)
        if r.status_code == 200:
            break
        run_pending(app.state.db, app.state.settings, kinds=["export"])
    assert r.status_code == 200, r.text
    got: dict[str, set[str]] = {}
    for item in r.json()["output"]:
        got.setdefault(item["type"], set()).update(json.loads(line)["id"] for line in c.get(item["url"]).content.splitlines())
    return got


def case_claim(client, claim_id: str, subject: dict) -> dict:
    """A minimal valid active Claim `claim_id` of `subject` (a case of the per-case consent tests)."""
    return put(client, {"resourceType": "Claim", "id": claim_id, "status": "active", "use": "claim", "patient": subject,
                        "created": "2026-01-01",
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
                        "provider": {"display": "Clinic"}, "priority": {"coding": [{"code": "normal"}]},
                        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Policy"}}]})
