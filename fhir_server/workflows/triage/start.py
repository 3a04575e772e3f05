"""A completed symptom questionnaire starts a visit: a Task in the care unit's queue.

Chosen: the server makes the Task, by a rule per Questionnaire kept as data
(resources/questionnaires/rules.json, action `start-visit`), in the response's
transaction, so that a completed response is never left without its visit and
a client cannot choose its own priority. The Task:
status requested, intent order, code `fulfill`, focus the response, for the
response's subject, requester the subject, owner the rule's care unit (or the
Organization a `ownerItem` answer names), authoredOn the response's authored
time, priority the first rule whose FHIRPath `when` is true on the response
(else `defaultPriority`). Its id is derived from the response's, so completing
a response again never queues a second visit.
"""

from __future__ import annotations

import hashlib
import logging

from sqlalchemy import Connection

from ..common import put
from ..proms.hooks import on_completed
from ..proms.scoring import compiled

log = logging.getLogger("fhir_server.triage")
TASK_CODE = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}], "text": "Care-seeking visit"}
TRIAGE_TAG = {"system": "http://fhir-server.example/CodeSystem/workflow", "code": "triage-visit"}


def visit_task_id(response_id: str) -> str:
    return "visit-" + hashlib.sha256(response_id.encode()).hexdigest()[:40]


def priority_for(response: dict, rule: dict) -> str:
    import copy

    for candidate in rule.get("priority") or []:
        subject = copy.deepcopy(response)
        try:
            result = compiled(candidate["when"])(subject, {"resource": subject})
        except Exception as exc:  # a broken rule must not lose the patient's visit
            log.warning("triage rule %r failed: %s", candidate.get("when"), exc)
            continue
        if result == [True]:
            return candidate["priority"]
    return rule.get("defaultPriority", "routine")


def _owner(response: dict, rule: dict) -> dict:
    link = rule.get("ownerItem")
    for item in response.get("item") or []:
        if link and item.get("linkId") == link:
            for ans in item.get("answer") or []:
                ref = (ans.get("valueReference") or {}).get("reference")
                if isinstance(ref, str) and ref.startswith("Organization/"):
                    return {"reference": ref}
    return {"reference": rule["owner"]}


@on_completed("start-visit")
def start_visit(conn: Connection, response: dict, rule: dict) -> None:
    task = {
        "resourceType": "Task",
        "id": visit_task_id(response["id"]),
        "meta": {"tag": [TRIAGE_TAG]},
        "status": "requested",
        "intent": "order",
        "priority": priority_for(response, rule),
        "code": TASK_CODE,
        "focus": {"reference": f"QuestionnaireResponse/{response['id']}"},
        "authoredOn": response.get("authored") or (response.get("meta") or {}).get("lastUpdated"),
        "owner": _owner(response, rule),
    }
    if isinstance(response.get("subject"), dict):
        task["for"] = response["subject"]
        task["requester"] = response["subject"]
    put(conn, task, only_if_absent=True)
