"""CommunicationRequest: what is to be sent, to whom, and when.

`queue_notification` writes one in the caller's transaction together with
the durable job that will deliver it (id `notify-<request id>`: enqueued
once, so a request is never queued twice).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Connection

from ..clock import now
from ..errors import FhirError
from ..rest import internal
from . import templates

TEMPLATE_SYSTEM = "http://example.org/fhir-server/CodeSystem/notification-template"
KEY_SYSTEM = "http://example.org/fhir-server/notification-key"
PAYLOAD_PART = "http://example.org/fhir-server/StructureDefinition/notification-payload-part"
MODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
MEDIUM = {"email": "EMAILWRIT", "sms": "SMSWRIT"}
SEND_JOB = "notify.send"

_settings = None


def configure(settings) -> None:
    global _settings
    _settings = settings


def settings():
    if _settings is None:
        from ..config import Settings

        return Settings()
    return _settings


def _instant(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def queue_notification(
    conn: Connection,
    patient_ref: str,
    template_key: str,
    context: dict | None = None,
    when: datetime | None = None,
    reason_ref: str | None = None,
    key: str | None = None,
    channels: tuple[str, ...] = ("email", "sms"),
) -> str:
    """Queue a message to a Patient; returns the CommunicationRequest id.

    patient_ref  "Patient/<id>" (must exist: 422 otherwise)
    template_key a key of terminology/templates/notify/<lang>.yaml
    context      placeholders for the template (str values; `with`, `where` optional)
    when         aware datetime to send at (None: at once)
    reason_ref   what the message is about, e.g. "Appointment/<id>" (CommunicationRequest.about)
    key          a business key stored as CommunicationRequest.identifier, to find it later
                 (`revoke_by_key`), e.g. "reminder:Appointment/123"
    channels     which of the Patient's contact points to use ("email", "sms")

    The text is rendered now, in the Patient's language (Patient.communication),
    and stored in the request's payload; the job sends it at `when`.
    """
    from ..jobs import queue

    s = settings()
    patient_id = patient_ref.split("/")[-1]
    patient = internal.read(conn, "Patient", patient_id)
    if patient is None:
        raise FhirError.of(422, "not-found", f"Cannot notify {patient_ref}: no such Patient")
    language = templates.language_of(patient, s.notify_default_language, s.notify_templates_dir or None)
    ctx = {"name": _display_name(patient), **(context or {})}
    text = templates.render(template_key, language, ctx, s.notify_templates_dir or None)
    t = now()
    due = when if when is not None and when > t else t
    cr: dict = {
        "resourceType": "CommunicationRequest",
        "language": language,
        "status": "active",
        "category": [{"coding": [{"system": TEMPLATE_SYSTEM, "code": template_key}]}],
        "medium": [{"coding": [{"system": MODE_SYSTEM, "code": MEDIUM[c]}], "text": c} for c in channels],
        "subject": {"reference": f"Patient/{patient_id}"},
        "recipient": [{"reference": f"Patient/{patient_id}"}],
        "payload": [
            {"extension": [{"url": PAYLOAD_PART, "valueCode": part}], "contentString": value}
            for part, value in (("subject", text.subject), ("email", text.email), ("sms", text.sms)) if value
        ],
        "occurrenceDateTime": _instant(due),
        "authoredOn": _instant(t),
    }
    if reason_ref:
        cr["about"] = [{"reference": reason_ref}]
    if key:
        cr["identifier"] = [{"system": KEY_SYSTEM, "value": key}]
    cr_id = internal.create(conn, cr)
    queue.enqueue(conn, SEND_JOB, {"request": cr_id}, job_id=f"notify-{cr_id}",
                  not_before=due if due > t else None)
    return cr_id


def revoke_by_key(conn: Connection, key: str) -> list[str]:
    """Revoke the active CommunicationRequests carrying business key `key`
    (e.g. a reminder whose appointment was cancelled); returns their ids."""
    from ..search.engine import find_matches

    out = []
    for _pk, cr_id in find_matches(conn, "CommunicationRequest", [("identifier", f"{KEY_SYSTEM}|{key}"), ("status", "active")], limit=100):
        def revoke(doc: dict) -> bool:
            if doc.get("status") != "active":
                return False
            doc["status"] = "revoked"
            return True

        if internal.rewrite(conn, "CommunicationRequest", cr_id, revoke) is not None:
            out.append(cr_id)
    return out


def payload_part(cr: dict, part: str) -> str:
    for p in cr.get("payload") or []:
        for ext in p.get("extension") or []:
            if ext.get("url") == PAYLOAD_PART and ext.get("valueCode") == part:
                return p.get("contentString") or ""
    return ""


def channels_of(cr: dict) -> list[str]:
    by_code = {v: k for k, v in MEDIUM.items()}
    out = []
    for m in cr.get("medium") or []:
        for c in m.get("coding") or []:
            if c.get("code") in by_code:
                out.append(by_code[c["code"]])
    return out


def _display_name(patient: dict) -> str:
    for n in patient.get("name") or []:
        if n.get("text"):
            return n["text"]
        parts = list(n.get("given") or []) + ([n["family"]] if n.get("family") else [])
        if parts:
            return " ".join(parts)
    return ""
