"""Which Patient compartments a resource in hand belongs to (R4 CompartmentDefinition/patient).

The same rule `query.compartment_condition` compiles into SQL, evaluated on a resource's
JSON instead of the reference index: a Patient is in its own compartment, and any resource
is in the compartment of each Patient its compartment parameters reference (relative
references; an absolute reference is not resolved here, so callers that must be exact treat
"not found" as "ask the database"). Used by the access log for a write's event (the resource is
in hand before its index rows are); the fast read path asks the index in its read statement.
"""

from __future__ import annotations

from . import indexer, registry
from .values import LEN_ID, parse_reference


_entries: dict[str, tuple] = {}  # res_type -> (the indexer plan they come from, its compartment entries)


def _compartment_entries(res_type: str) -> list:
    """The indexer's (parameter, evaluator, converter) entries of the type's Patient-compartment
    reference parameters; recomputed when the indexer's plan is (custom parameters changed)."""
    plan = indexer._plan(res_type)
    cached = _entries.get(res_type)
    if cached is not None and cached[0] is plan:
        return cached[1]
    params = registry.patient_compartment().get(res_type) or ()
    entries = [(sp, ev, conv) for sp, ev, conv in plan.entries
               if conv is not None and sp.type == "reference" and sp.code in params]
    _entries[res_type] = (plan, entries)
    return entries


def patients_of(res_type: str, resource: dict | None) -> list[str]:
    """Patient ids whose compartment holds `resource` (possibly empty), in first-seen order.

    A relative `reference` is read directly (`values.parse_reference`, as the reference
    converter reads it); anything else (absolute, canonical, identifier only) goes through
    the indexer's converter: tests/search/test_membership.py holds the two to the same answer."""
    if not isinstance(resource, dict):
        return []
    found: list[str] = []
    if res_type == "Patient" and isinstance(resource.get("id"), str):
        found.append(resource["id"])
    for sp, ev, conv in _compartment_entries(res_type):
        targets: list = []
        try:
            for item in ev(resource, resource) or ():
                v = item[0]
                ref = v.get("reference") if isinstance(v, dict) else None
                if isinstance(ref, str) and ref and "://" not in ref:
                    t, i, _url = parse_reference(ref)
                    if t == "Patient" and i:
                        targets.append(i[:LEN_ID])
                else:
                    targets.extend(row.get("target_id") for row in conv([item]) if row.get("target_type") == "Patient")
        except Exception:  # noqa: BLE001 - an odd reference is "not found", never an error
            continue
        for target in targets:
            if target and target not in found:
                found.append(target)
    return found
