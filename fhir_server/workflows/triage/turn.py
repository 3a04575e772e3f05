"""'It's your turn': when staff take a visit (Task to in-progress), tell the patient.

Runs in the Task update's transaction. The message goes out through the
notifier of the booking work (fhir_server.notify: SMS/e-mail via the jobs
outbox), which queues it in this same transaction, so a rolled-back update
sends nothing. A patient the notifier cannot reach (no such Patient) is logged
and does not fail the Task update.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from ... import events
from .start import TASK_CODE, TRIAGE_TAG

log = logging.getLogger("fhir_server.triage")
TEMPLATE = "queue-your-turn"


def is_visit(task: dict) -> bool:
    tags = (task.get("meta") or {}).get("tag") or []
    if any(t.get("system") == TRIAGE_TAG["system"] and t.get("code") == TRIAGE_TAG["code"] for t in tags if isinstance(t, dict)):
        return True
    codes = ((task.get("code") or {}).get("coding")) or []
    fulfil = any(c.get("code") == TASK_CODE["coding"][0]["code"] and c.get("system") == TASK_CODE["coding"][0]["system"] for c in codes if isinstance(c, dict))
    focus = (task.get("focus") or {}).get("reference") or ""
    return fulfil and focus.startswith("QuestionnaireResponse/")


def _already_told(conn: Connection, key: str) -> bool:
    """Whether a "your turn" for this visit was queued before (its CommunicationRequest
    carries the visit's key, whatever became of it since)."""
    from ...notify.requests import KEY_SYSTEM
    from ...search.engine import find_matches

    return bool(find_matches(conn, "CommunicationRequest", [("identifier", f"{KEY_SYSTEM}|{key}")], limit=1))


def _deliver(conn: Connection, patient: str, task: dict) -> bool:
    """Queue "it's your turn" with the notifier (fhir_server/notify), in the Task's write
    transaction; one message per visit Task: staff who put the visit back and take it
    again do not message the patient twice (the key `your-turn:Task/<id>` is looked up)."""
    from ...errors import FhirError
    from ...notify import queue_notification

    key = f"your-turn:Task/{task.get('id')}"
    if _already_told(conn, key):
        return False
    owner = ((task.get("owner") or {}).get("display")) or ""
    try:
        queue_notification(conn, patient, TEMPLATE, {"where": f" ({owner})" if owner else ""},
                           reason_ref=f"Task/{task.get('id')}", key=key)
    except FhirError as exc:
        log.warning("'your turn' for %s (Task/%s) not queued: %s", patient, task.get("id"), exc)
        return False
    return True


def on_change(conn: Connection, change: events.ResourceChange) -> None:
    if change.res_type != "Task" or change.new is None:
        return
    new, old = change.new, change.old or {}
    if new.get("status") != "in-progress" or old.get("status") == "in-progress" or not is_visit(new):
        return
    patient = (new.get("for") or {}).get("reference")
    if isinstance(patient, str) and patient.startswith("Patient/"):
        _deliver(conn, patient, new)
