"""A restricted token may not point its writes into records it cannot read.

A patient/ token writes only into its own compartment (checked after the write), but
the resource it writes may still *reference* another patient's data: a Communication
whose `partOf` is another patient's visit Task lands in that patient's chat. So, for
every principal whose scopes are limited, each literal local reference (`Type/id`) in
a written resource to patient data (the Patient itself, or a type in the R4 Patient
compartment) must be readable by the same token. Shared, non-patient resources
(Organization, Practitioner, Questionnaire, Slot, ...) are not checked here, and a
reference to a resource that does not exist stays the client's business (R4 does not
require referential integrity); it cannot reveal anything either.

A patient-context token also speaks only for its patient: a Communication it writes
names the patient (or nobody) as `sender`, never a care unit or a clinician.

Errors: 403 OperationOutcome (code `forbidden`) naming the element.
"""

from __future__ import annotations

from typing import Iterator

from sqlalchemy import Connection

from ..errors import FhirError
from .authz import Principal, visibility

MAX_CHECKED = 200  # references checked per resource (a portal's writes carry a handful)


def _local_references(value, path: str) -> Iterator[tuple[str, str, str]]:
    """(element path, type, id) of each literal relative reference in `value`."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and not ref.startswith(("#", "urn:", "http:", "https:")):
            parts = ref.split("/")
            if len(parts) in (2, 4) and parts[0] and parts[1]:
                yield f"{path}.reference", parts[0], parts[1]
        for k, v in value.items():
            if k not in ("reference", "contained", "text"):
                yield from _local_references(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _local_references(v, f"{path}[{i}]")


def own_patient(principal: Principal) -> str | None:
    """The Patient id a token speaks for: its SMART patient context, else a Patient fhirUser."""
    if principal.patient:
        return principal.patient
    user = principal.fhir_user or ""
    return user.split("/", 1)[1] if user.startswith("Patient/") else None


def check_write_references(conn: Connection, principal: Principal, res_type: str, resource: dict) -> None:
    """403 when a restricted token's resource references patient data it may not read."""
    if principal.unrestricted:
        return
    from ..search import registry
    from ..search.access import visible
    from ..storage import repository as repo

    compartment = registry.patient_compartment()
    seen: set[tuple[str, str]] = set()
    grants: dict[str, object] = {}
    for where, t, rid in _local_references(resource, res_type):
        if (t, rid) in seen or (t != "Patient" and t not in compartment):
            continue
        if t not in grants:
            grants[t] = visibility(principal, t, "r")
        vis = grants[t]
        if vis is None:  # the token reads every resource of the type: nothing to check
            continue
        seen.add((t, rid))
        if len(seen) > MAX_CHECKED:
            raise FhirError.of(403, "forbidden", f"A restricted token may reference at most {MAX_CHECKED} patient resources in one write")
        current = repo.read_current(conn, t, rid)
        if current is None or current.deleted:
            continue
        if not visible(conn, t, rid, vis):
            raise FhirError.of(403, "forbidden", f"{where} references {t}/{rid}, which lies outside what the token may read", where)
    _check_sender(principal, res_type, resource)


def _check_sender(principal: Principal, res_type: str, resource: dict) -> None:
    patient = own_patient(principal)
    if res_type != "Communication" or patient is None:
        return
    sender = (resource.get("sender") or {}).get("reference")
    if sender is not None and sender != f"Patient/{patient}":
        raise FhirError.of(403, "forbidden", f"A patient's token sends as Patient/{patient} only, not as {sender}",
                           "Communication.sender")
