"""`Appointment/$book`: book a held or proposed Appointment; reschedule in one step
(Argonaut Scheduling IG).

POST a Parameters body with:
  appt-resource  the Appointment to book: a held one (its id, from $hold) or a
                 proposal from $find (no id). It is stored as `booked`.
  appt-resource  (optional, a second one) the Appointment being replaced, with
                 status `cancelled` — the Argonaut way to reschedule
  reschedule     (optional) Reference(Appointment) being replaced — the same, shorter

Booking the new and cancelling the old happen in one database transaction:
both or neither (never none, never two). The patient gets one
`appointment-rescheduled` message rather than a confirmation and a cancellation.

Returns a Bundle (collection) with the booked Appointment (and the cancelled
one). Errors: 400 bad body; 404 the Appointment to hold/replace is unknown;
409 the Slot is already taken; 422 a booking rule (online hours, lead time,
horizon, cancellation deadline) or an Appointment rule is broken.
"""

from __future__ import annotations

from ..errors import FhirError
from ..model import jsonio
from ..rest import interactions as ix
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..workflows.booking import lifecycle, windows
from ..workflows.booking.proposals import appointments, reference_param
from ..workflows.booking.resources import read

DEFINITION = "http://fhir.org/guides/argonaut/scheduling/OperationDefinition/appointment-book"


def _split(call: OperationCall):
    parsed = appointments(call)
    new = [p for p in parsed if p.plain.get("status") != "cancelled"]
    old = [p for p in parsed if p.plain.get("status") == "cancelled"]
    if len(new) != 1 or len(old) > 1:
        raise FhirError.of(400, "invalid", "$book takes one Appointment to book and at most one (status cancelled) it replaces")
    old_id = old[0].plain.get("id") if old else None
    if old and not old_id:
        raise FhirError.of(400, "required", "The Appointment being replaced must carry its id", "Appointment.id")
    ref = reference_param(call, "reschedule")
    if ref:
        if old_id and ref.split("/")[-1] != old_id:
            raise FhirError.of(400, "invalid", "'reschedule' and the cancelled appt-resource name different Appointments")
        old_id = ref.split("/")[-1]
    return new[0], old_id


@operation("book", ("type",), types=("Appointment",), definition=DEFINITION)
def book(call: OperationCall) -> Outcome:
    appt, old_id = _split(call)
    for doc in (appt.plain, appt.preserving):
        doc["status"] = "booked"
    ix.prevalidate("Appointment", appt)
    token = lifecycle.rescheduling.set(bool(old_id))
    try:
        with call.db.write() as conn:
            entries = []
            if old_id:
                entries.append(_cancel(conn, call, old_id))
            appt_id = appt.plain.get("id")
            current = read(conn, "Appointment", appt_id) if appt_id else None
            if appt_id and current is None:
                raise FhirError.of(404, "not-found", f"Appointment/{appt_id} is not known; book a proposal without an id, or hold it first")
            if current is not None and current.get("status") not in ("proposed", "pending", "booked"):
                raise FhirError.of(409, "conflict", f"Appointment/{appt_id} is {current.get('status')} and cannot be booked", "Appointment.status")
            windows.check_for_appointment(conn, call.settings, appt.plain)
            if current is not None:
                out = ix.update(conn, call.ctx, "Appointment", appt_id, appt)
            else:
                for doc in (appt.plain, appt.preserving):
                    doc.pop("id", None)
                out = ix.create(conn, call.ctx, "Appointment", appt)
            entries.insert(0, {"fullUrl": f"{call.ctx.base_url}/Appointment/{out.res_id}", "resource": jsonio.parse_plain(out.body)})
    finally:
        lifecycle.rescheduling.reset(token)
    return Outcome(status=200, body=jsonio.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))


def _cancel(conn, call: OperationCall, old_id: str) -> dict:
    old = read(conn, "Appointment", old_id, for_update=True)
    if old is None:
        raise FhirError.of(404, "not-found", f"Appointment/{old_id} (to be replaced) is not known")
    if old.get("status") not in ("booked", "pending", "proposed"):
        raise FhirError.of(409, "conflict", f"Appointment/{old_id} is {old.get('status')}; only a booked, pending or held appointment can be rescheduled")
    windows.check_for_appointment(conn, call.settings, old, cancelling=True)
    old["status"] = "cancelled"
    old["cancelationReason"] = {"text": "Rescheduled"}
    parsed = ix.ParsedResource.from_preserving(jsonio.parse_preserving(jsonio.dumps(old)))
    out = ix.update(conn, call.ctx, "Appointment", old_id, parsed)
    return {"fullUrl": f"{call.ctx.base_url}/Appointment/{old_id}", "resource": jsonio.parse_plain(out.body)}
