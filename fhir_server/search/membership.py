"""Which Patient compartments a resource in hand belongs to (R4 CompartmentDefinition/patient).

The same rule `query.compartment_condition` compiles into SQL, evaluated on a resource's
JSON instead of the reference index: a Patient is in its own compartment, and any resource
is in the compartment of each Patient its compartment parameters reference (relative
references; an absolute reference is not resolved here, so callers that must be exact treat
"not found" as "ask the database"). Used by the fast read path and the access log.
"""

from __future__ import annotations

from . import registry


def patients_of(res_type: str, resource: dict | None) -> list[str]:
    """Patient ids whose compartment holds `resource` (possibly empty), in first-seen order."""
    from .indexer import _plan

    if not isinstance(resource, dict):
        return []
    found: list[str] = []
    if res_type == "Patient" and isinstance(resource.get("id"), str):
        found.append(resource["id"])
    params = registry.patient_compartment().get(res_type)
    if not params:
        return found
    for sp, ev, conv in _plan(res_type).entries:
        if conv is None or sp.type != "reference" or sp.code not in params:
            continue
        try:
            items = ev(resource, resource)
            rows = conv(items) if items else []
        except Exception:  # noqa: BLE001 - an odd reference is "not found", never an error
            continue
        for row in rows:
            target = row.get("target_id")
            if row.get("target_type") == "Patient" and target and target not in found:
                found.append(target)
    return found
