"""`Appointment/$hold`: reserve a Slot between choosing and confirming (Argonaut Scheduling IG).

POST a Parameters body with `appt-resource`: the Appointment chosen from
$find (status `proposed`, one or more `slot` references). It is stored as
`proposed`, which claims its Slots for `booking_hold_minutes` (the Slots turn
`busy`); `$book` turns it into `booked`. A hold nobody books expires by itself:
a durable job cancels the Appointment and frees the Slots at its end.

Returns a Bundle (collection) with the stored Appointment and an
OperationOutcome giving the hold's end. Errors: 400 bad body, 409 the Slot
is already taken, 422 a booking rule (online hours, lead time, horizon:
mappings/booking/rules.yaml) or an Appointment rule is broken.
"""

from __future__ import annotations

from datetime import timedelta

from ..clock import now
from ..errors import FhirError
from ..model import jsonio
from ..rest import interactions as ix
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..workflows.booking import windows
from ..workflows.booking.integrity import hold_minutes
from ..workflows.booking.proposals import appointments
from ..workflows.booking.resources import fhir_instant

DEFINITION = "http://fhir.org/guides/argonaut/scheduling/OperationDefinition/appointment-hold"


@operation("hold", ("type",), types=("Appointment",), definition=DEFINITION)
def hold(call: OperationCall) -> Outcome:
    parsed = appointments(call)
    if len(parsed) != 1:
        raise FhirError.of(400, "invalid", "$hold takes exactly one 'appt-resource'")
    appt = parsed[0]
    for doc in (appt.plain, appt.preserving):
        doc["status"] = "proposed"
        doc.pop("id", None)
    if not appt.plain.get("slot"):
        raise FhirError.of(422, "business-rule", "The Appointment to hold must reference the Slot it holds", "Appointment.slot")
    ix.prevalidate("Appointment", appt)
    with call.db.write() as conn:
        windows.check_for_appointment(conn, call.settings, appt.plain)
        out = ix.create(conn, call.ctx, "Appointment", appt)
    stored = jsonio.parse_plain(out.body) if out.body else {}
    until = now() + timedelta(minutes=hold_minutes())
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"{call.ctx.base_url}/Appointment/{out.res_id}", "resource": stored},
        {"resource": {"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": f"Slot held until {fhir_instant(until)}; book it with Appointment/$book before then"}]}},
    ]}
    return Outcome(status=200, body=jsonio.dumps(bundle))
