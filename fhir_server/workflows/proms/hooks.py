"""What happens in the write's transaction when a QuestionnaireResponse is completed.

- its scores are stored as Observations (scoring.py); when the response is
  later marked `entered-in-error` or deleted, its score Observations become
  `entered-in-error` too (a registry pulling them sees the withdrawal);
- a PER-style registration (rules.json action `assign-scales`) becomes one Task
  per chosen scale: SDC "complete this questionnaire" Tasks (code
  complete-questionnaire, input questionnaire = the scale's canonical), for the
  patient, owned by the patient, due before the visit date, focus the
  registration response. One Task per scale rather than a CarePlan: each scale
  is then done, cancelled or reminded about on its own, and a portal finds them
  with `Task?owner=Patient/x&status=requested`.
- other actions (the triage `start-visit`) are registered by their modules via
  `on_completed`.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from sqlalchemy import Connection

from ... import events
from ..common import put, rule_for
from .resolve import resolve_canonical
from .scoring import SCORE_ID_PREFIX, compute_scores, observation_for

FINAL = ("completed", "amended")
SDC_TASK_CODE = {"coding": [{"system": "http://hl7.org/fhir/uv/sdc/CodeSystem/temp", "code": "complete-questionnaire"}]}
SDC_INPUT_TYPE = {"coding": [{"system": "http://hl7.org/fhir/uv/sdc/CodeSystem/temp", "code": "questionnaire"}]}

# action name (rules.json) -> fn(conn, response, rule)
_actions: dict[str, Callable[[Connection, dict, dict], None]] = {}


def on_completed(action: str):
    def wrap(fn):
        _actions[action] = fn
        return fn

    return wrap


def _answers(response: dict) -> list:
    return response.get("item") or []


def withdraw_scores(conn: Connection, response_id: str) -> list[str]:
    """Mark the score Observations of a response entered-in-error; returns their ids."""
    from ...rest import internal
    from ...search.engine import find_matches

    def mark(doc: dict) -> bool:
        if doc.get("status") == "entered-in-error":
            return False
        doc["status"] = "entered-in-error"
        return True

    done = []
    for _pk, obs_id in find_matches(conn, "Observation", [("derived-from", f"QuestionnaireResponse/{response_id}")], limit=1000):
        if obs_id.startswith(SCORE_ID_PREFIX) and internal.rewrite(conn, "Observation", obs_id, mark) is not None:
            done.append(obs_id)
    return done


def on_change(conn: Connection, change: events.ResourceChange) -> None:
    if change.res_type != "QuestionnaireResponse":
        return
    new = change.new
    if new is None or new.get("status") == "entered-in-error":
        withdraw_scores(conn, change.res_id)
        return
    if new.get("status") not in FINAL:
        return
    old = change.old or {}
    newly_completed = old.get("status") not in FINAL
    if not newly_completed and _answers(old) == _answers(new):
        return
    canonical = new.get("questionnaire")
    questionnaire = resolve_canonical(conn, "Questionnaire", canonical, new) if isinstance(canonical, str) else None
    if questionnaire is not None:
        for score in compute_scores(new, questionnaire):
            put(conn, observation_for(new, questionnaire, score))
    rule = rule_for(canonical)
    if newly_completed and rule and rule.get("action") in _actions:
        _actions[rule["action"]](conn, new, rule)


def _task_id(*parts: str) -> str:
    return "task-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


@on_completed("assign-scales")
def assign_scales(conn: Connection, response: dict, rule: dict) -> None:
    """One SDC questionnaire Task per scale the patient chose."""
    subject = response.get("subject")
    visit = None
    chosen: list[dict] = []
    for item in response.get("item") or []:
        for ans in item.get("answer") or []:
            if item.get("linkId") == rule.get("visitDateItem") and "valueDate" in ans:
                visit = ans["valueDate"]
            if item.get("linkId") == rule.get("scalesItem") and isinstance(ans.get("valueCoding"), dict):
                chosen.append(ans["valueCoding"])
    for coding in chosen:
        canonical = coding.get("code")
        if not canonical:
            continue
        task = {
            "resourceType": "Task",
            "id": _task_id(response["id"], canonical),
            "status": "requested",
            "intent": "order",
            "code": SDC_TASK_CODE,
            "description": f"Fill in {coding.get('display') or canonical} before your visit",
            "focus": {"reference": f"QuestionnaireResponse/{response['id']}"},
            "authoredOn": response.get("authored") or (response.get("meta") or {}).get("lastUpdated"),
            "input": [{"type": SDC_INPUT_TYPE, "valueCanonical": canonical}],
        }
        if isinstance(subject, dict):
            task["for"] = subject
            task["owner"] = subject
        if visit:
            task["restriction"] = {"period": {"end": visit}}
        put(conn, {k: v for k, v in task.items() if v is not None}, only_if_absent=True)
