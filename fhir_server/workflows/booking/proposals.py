"""What $find, $hold and $book share: their Parameters, and proposed Appointments built from Slots.

Argonaut Scheduling IG (http://fhir.org/guides/argonaut/scheduling/): $find
answers proposed Appointments made from free Slots; $hold and $book take the
chosen Appointment as the `appt-resource` parameter.
"""

from __future__ import annotations

from typing import Any

from ...errors import FhirError
from ...model import jsonio
from ...rest.interactions import ParsedResource


def parameters(call: Any) -> list[dict]:
    """The Parameters.parameter list of a POSTed body (400 if it is not a Parameters)."""
    if call.method != "POST" or not call.body.strip():
        raise FhirError.of(400, "required", f"${call.name} is invoked with POST and a Parameters body holding 'appt-resource'")
    doc = jsonio.parse_preserving(call.body)
    if not isinstance(doc, dict) or doc.get("resourceType") != "Parameters":
        raise FhirError.of(400, "structure", f"${call.name} takes a Parameters resource")
    params = doc.get("parameter") or []
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise FhirError.of(400, "structure", "Parameters.parameter must be a list of objects")
    return params


def appointments(call: Any, name: str = "appt-resource") -> list[ParsedResource]:
    """Each `appt-resource` parameter's Appointment, parsed (order kept)."""
    out = []
    for i, p in enumerate(parameters(call)):
        if p.get("name") != name:
            continue
        res = p.get("resource")
        if not isinstance(res, dict) or res.get("resourceType") != "Appointment":
            raise FhirError.of(400, "invalid", f"Parameter '{name}' must hold an Appointment resource", f"Parameters.parameter[{i}]")
        out.append(ParsedResource.from_preserving(res))
    if not out:
        raise FhirError.of(400, "required", f"${call.name} needs an '{name}' parameter holding an Appointment", "Parameters.parameter")
    return out


def reference_param(call: Any, name: str) -> str | None:
    for p in parameters(call):
        if p.get("name") == name:
            v = p.get("valueReference") or {}
            return v.get("reference") or p.get("valueString")
    return None


def proposal(slot: dict, actors: list[dict], patient_ref: str | None) -> dict:
    """A `proposed` Appointment for one free Slot (not stored)."""
    appt: dict = {"resourceType": "Appointment", "status": "proposed"}
    for element in ("serviceCategory", "serviceType", "specialty", "appointmentType"):
        if slot.get(element):
            appt[element] = slot[element]
    appt.update(start=slot["start"], end=slot["end"], slot=[{"reference": f"Slot/{slot['id']}"}])
    participants = [{"actor": a, "required": "required", "status": "needs-action"} for a in actors]
    if patient_ref:
        participants.insert(0, {"actor": {"reference": patient_ref}, "required": "required", "status": "needs-action"})
    appt["participant"] = participants or [{"type": [{"text": "patient"}], "required": "required", "status": "needs-action"}]
    return appt
