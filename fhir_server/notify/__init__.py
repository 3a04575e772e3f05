"""The notifier: messages to patients by e-mail and SMS, durable and sent once.

Interface (docs/notifications.md), for any workflow (booking, care-seeking
queue, claims):

    from fhir_server.notify import queue_notification, revoke_by_key

    cr_id = queue_notification(conn, "Patient/123", "queue-your-turn",
                               {"where": "Vårdcentralen Kungsholmen"},
                               when=None, reason_ref="Task/456")

It writes a CommunicationRequest (what, to whom, when; the text rendered in
the Patient's language) and its delivery job in the caller's transaction. The
job worker sends it on the Patient's channels and records each send as a
Communication (`completed` with the gateway's message id, or `not-done` with
the reason). `fhir-server notify status` shows what waits and what failed.
"""

from __future__ import annotations

from .requests import queue_notification, revoke_by_key

__all__ = ["queue_notification", "revoke_by_key"]


def setup(settings) -> None:
    from ..jobs import queue
    from . import delivery, requests

    requests.configure(settings)
    queue.register_handler(requests.SEND_JOB, delivery.run_send_job, lease_seconds=120)
    queue.register_housekeeping("notify-waiting", delivery.requeue_waiting)
