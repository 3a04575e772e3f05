"""The resources the claims workflow writes: ClaimResponse (R4 financial
module) and Task (the work item for the insurer's case handlers)."""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta, timezone

from .adjudication import Decision

ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
PRE_AUTH_PREFIX = "PA"


def today() -> date:
    return datetime.now(timezone.utc).date()


def now_instant() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_pre_auth_ref() -> str:
    """A reference the patient quotes to the clinic: PA-<year>-<10 base32 characters>."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return f"{PRE_AUTH_PREFIX}-{today().year}-" + "".join(secrets.choice(alphabet) for _ in range(10))


def pre_auth_period(valid_days: int, start: date | None = None) -> dict:
    start = start or today()
    return {"start": start.isoformat(), "end": (start + timedelta(days=valid_days)).isoformat()}


def adjudication_entries(requested: int, approved: int) -> list[dict]:
    """Item adjudication: `submitted` = treatments asked for, `eligible` = treatments approved (value)."""
    return [
        {"category": {"coding": [{"system": ADJUDICATION, "code": "submitted"}]}, "value": requested},
        {"category": {"coding": [{"system": ADJUDICATION, "code": "eligible"}]}, "value": approved},
    ]


def approved_count(item: dict) -> int:
    """The approved number of treatments in a ClaimResponse.item (its `eligible` value)."""
    for adj in item.get("adjudication") or []:
        codes = {(c.get("system"), c.get("code")) for c in (adj.get("category") or {}).get("coding") or []}
        if (ADJUDICATION, "eligible") in codes and isinstance(adj.get("value"), (int, float)):
            return int(adj["value"])
    return 0


def claim_response(claim: dict, insurer: dict, outcome: str, disposition: str, decision: Decision | None = None,
                   pre_auth: tuple[str, dict] | None = None, tag: dict | None = None) -> dict:
    out: dict = {"resourceType": "ClaimResponse"}
    if tag:
        out["meta"] = {"tag": [tag]}
    out.update({
        "status": "active",
        "type": claim.get("type"),
        "use": claim.get("use"),
        "patient": claim.get("patient"),
        "created": now_instant(),
        "insurer": insurer,
    })
    if claim.get("provider"):
        out["requestor"] = claim["provider"]
    out["request"] = {"reference": f"Claim/{claim['id']}"}
    out["outcome"] = outcome
    out["disposition"] = disposition
    if pre_auth:
        out["preAuthRef"], out["preAuthPeriod"] = pre_auth
    if decision and decision.items:
        out["item"] = [{"itemSequence": i.sequence, "adjudication": adjudication_entries(i.requested, i.approved)} for i in decision.items]
    return out


def handler_task(claim: dict, owner: dict | None, description: str, due_days: int | None = None, tag: dict | None = None) -> dict:
    """A Task for the insurer's team: decide on (approve) the focal Claim."""
    task: dict = {"resourceType": "Task"}
    if tag:
        task["meta"] = {"tag": [tag]}
    task.update({
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_CODE, "code": "approve", "display": "Approve the focal resource"}]},
        "description": description,
        "focus": {"reference": f"Claim/{claim['id']}"},
        "for": claim.get("patient"),
        "authoredOn": now_instant(),
    })
    if owner:
        task["owner"] = owner
    if due_days:
        task["restriction"] = {"period": {"end": (datetime.now(timezone.utc) + timedelta(days=due_days)).isoformat(timespec="seconds").replace("+00:00", "Z")}}
    return task
