"""SEAM: tell the patient that their claim moved (the notifier is issue 15).

`notify_patient` is the one place the claims workflow calls. When the notifier
module (`fhir_server.notify`, built in parallel) is importable, the call goes
to it, inside the write's transaction, so the e-mail/SMS is queued in the
jobs outbox with the change (DESIGN.md: everything sent out goes through the
jobs table). Until then the event is logged and handed to in-process
listeners (`listen`), which the tests use to check what would be sent.
After the merge, wiring is the one line in `_deliver`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("fhir_server.claims")


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
    try:
        from ... import notify as notifier  # issue 15; not on main yet
    except ImportError:
        log.info("claims: %s for %s (%s): no notifier installed", event.event, event.patient, event.claim)
        return
    send = getattr(notifier, "notify_patient", None)
    if callable(send):
        send(conn, event.patient, event.event, {"claim": event.claim, "response": event.response, "document": event.document, "text": event.text})
