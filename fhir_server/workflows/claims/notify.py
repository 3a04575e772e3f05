"""Tell the patient that their claim moved, through the notifier (docs/notifications.md).

`notify_patient` is the one place the claims workflow calls, inside the write's
transaction. It hands the event to in-process listeners (`listen`, used by the
tests) and queues message `claim-decision` with `fhir_server.notify.queue_notification`:
a CommunicationRequest and a `notify.send` job in the same transaction, so a
rolled-back decision sends nothing and a committed one is sent once (e-mail
and SMS, in the Patient's language; terminology/templates/notify/<lang>.yaml,
where `_phrases.decision` words the event per language).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

@dataclass(frozen=True)
class ClaimEvent:
    patient: str  # "Patient/<id>"
    event: str  # claim-approved | claim-queued | claim-decided | reimbursement-paid
    claim: str  # "Claim/<id>"
    response: str | None  # "ClaimResponse/<id>"
    document: str | None  # "DocumentReference/<id>" of a payment guarantee
    text: str  # a short human summary (the notifier's templates may word it per language)


_listeners: list[Callable[[object, ClaimEvent], None]] = []


def listen(fn: Callable[[object, ClaimEvent], None]) -> Callable[[], None]:
    """Add a listener `fn(conn, event)`; returns a function that removes it."""
    _listeners.append(fn)
    return lambda: _listeners.remove(fn) if fn in _listeners else None


def notify_patient(conn, event: ClaimEvent) -> None:
    for fn in list(_listeners):
        fn(conn, event)
    _deliver(conn, event)


def _deliver(conn, event: ClaimEvent) -> None:
    from ...notify import queue_notification

    about = event.response or event.claim
    queue_notification(
        conn, event.patient, "claim-decision",
        {"reference": event.claim.split("/")[-1], "decision": event.event, "details": event.text},
        reason_ref=about, key=f"{event.event}:{about}",
    )
