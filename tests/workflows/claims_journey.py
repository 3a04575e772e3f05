"""Building blocks of the Danish insurance journey (shared by the tests)."""

from __future__ import annotations

TT = "http://fhir-server.local/CodeSystem/treatment-type"
ADJ = "http://terminology.hl7.org/CodeSystem/adjudication"


def claim(patient: str, coverage: str, insurer: str, use: str = "preauthorization", items=None, **extra) -> dict:
    body = {
        "resourceType": "Claim",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": use,
        "patient": {"reference": patient},
        "created": "2026-03-01",
        "insurer": {"reference": insurer},
        "provider": {"display": "Fysioterapi Nørrebro"},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": coverage}}],
    }
    if items is not None:
        body["item"] = items
    body.update(extra)
    return body


def treatment(code: str = "fysioterapi", quantity: int | None = None, sequence: int = 1) -> dict:
    item = {"sequence": sequence, "productOrService": {"coding": [{"system": TT, "code": code}]}}
    if quantity is not None:
        item["quantity"] = {"value": quantity}
    return item


def submit_params(resource: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]}


def approved(response: dict) -> list[int]:
    out = []
    for item in response.get("item") or []:
        for adj in item.get("adjudication") or []:
            if adj["category"]["coding"][0]["code"] == "eligible":
                out.append(adj["value"])
    return out


def decision(claim_id: str, patient: str, insurer: str, use: str, outcome: str = "complete", **extra) -> dict:
    body = {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": use,
        "patient": {"reference": patient},
        "created": "2026-03-05T09:00:00Z",
        "insurer": {"reference": insurer},
        "request": {"reference": f"Claim/{claim_id}"},
        "outcome": outcome,
    }
    body.update(extra)
    return body


def eligible_items(count: int) -> list[dict]:
    return [{"itemSequence": 1, "adjudication": [{"category": {"coding": [{"system": ADJ, "code": "eligible"}]}, "value": count}]}]
