"""Builders for booking tests: a practitioner's Schedule with Slots, a Patient."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def post(client, resource: dict, headers: dict | None = None) -> dict:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers={**FHIR_JSON, **(headers or {})})
    assert r.status_code == 201, r.text
    return r.json()


def make_patient(client, email: str | None = None, phone: str | None = None, language: str | None = None) -> dict:
    telecom = []
    if email:
        telecom.append({"system": "email", "value": email})
    if phone:
        telecom.append({"system": "sms", "value": phone})
    p: dict = {"resourceType": "Patient", "name": [{"family": "Testsson", "given": ["Tove"]}]}
    if telecom:
        p["telecom"] = telecom
    if language:
        p["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]}, "preferred": True}]
    return post(client, p)


def make_schedule(client, org_id: str | None = None, location_id: str | None = None) -> tuple[dict, dict]:
    """(Practitioner, Schedule) with a unique specialty code for isolation."""
    pract = post(client, {"resourceType": "Practitioner", "name": [{"family": "Lekare", "given": ["Lars"]}]})
    actors = [{"reference": f"Practitioner/{pract['id']}"}]
    if location_id:
        actors.append({"reference": f"Location/{location_id}"})
    sched = {"resourceType": "Schedule", "active": True, "actor": actors,
             "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}]}
    return pract, post(client, sched)


def make_slot(client, schedule_id: str, start: datetime, minutes: int = 20, status: str = "free", capacity: int | None = None,
              service_code: str = "gp-visit") -> dict:
    slot = {"resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule_id}"}, "status": status,
            "start": iso(start), "end": iso(start + timedelta(minutes=minutes)),
            "serviceType": [{"coding": [{"system": "http://example.org/service", "code": service_code}]}],
            "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}],
            "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "ROUTINE"}]}}
    if capacity:
        slot["extension"] = [{"url": "http://example.org/fhir-server/StructureDefinition/slot-capacity", "valuePositiveInt": capacity}]
    return post(client, slot)


def appointment(slot: dict, patient_id: str, status: str = "booked", pract_id: str | None = None) -> dict:
    parts = [{"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"}]
    if pract_id:
        parts.append({"actor": {"reference": f"Practitioner/{pract_id}"}, "status": "accepted"})
    return {"resourceType": "Appointment", "status": status, "slot": [{"reference": f"Slot/{slot['id']}"}],
            "start": slot["start"], "end": slot["end"], "participant": parts}


def future(days: int = 3, hour: int = 9) -> datetime:
    base = datetime.now(timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0) + timedelta(days=days)
    return base + timedelta(minutes=20 * (uuid.uuid4().int % 1000))
