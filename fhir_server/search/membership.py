"""Which Patient compartments a resource in hand belongs to (R4 CompartmentDefinition/patient).

The same rule `query.compartment_condition` compiles into SQL, evaluated on a resource's
JSON instead of the reference index: a Patient is in its own compartment, and any resource
is in the compartment of each Patient its compartment parameters reference (relative
references; an absolute reference is not resolved here, so callers that must be exact treat
"not found" as "ask the database"). Used by the fast read path and the access log.
"""

from __future__ import annotations

from . import registry


_entries: dict[str, tuple] = {}  # res_type -> (the indexer plan they come from, its compartment entries)


def _compartment_entries(res_type: str) -> list:
    """The indexer's (parameter, evaluator, converter) entries of the type's Patient-compartment
    reference parameters; recomputed when the indexer's plan is (custom parameters changed)."""
    from .indexer import _plan

    plan = _plan(res_type)
    cached = _entries.get(res_type)
    if cached is not None and cached[0] is plan:
        return cached[1]
    params = registry.patient_compartment().get(res_type) or ()
    entries = [(sp, ev, conv) for sp, ev, conv in plan.entries
               if conv is not None and sp.type == "reference" and sp.code in params]
    _entries[res_type] = (plan, entries)
    return entries


def patients_of(res_type: str, resource: dict | None) -> list[str]:
    """Patient ids whose compartment holds `resource` (possibly empty), in first-seen order."""
    if not isinstance(resource, dict):
        return []
    found: list[str] = []
    if res_type == "Patient" and isinstance(resource.get("id"), str):
        found.append(resource["id"])
    for sp, ev, conv in _compartment_entries(res_type):
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
