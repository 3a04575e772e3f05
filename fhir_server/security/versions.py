"""Which earlier versions of a visible resource a compartment-restricted caller may see.

Search criteria, and so `check_visible`, look at a resource's current version only (the index
holds nothing else). A resource can move between compartments: an Observation filed under the
wrong patient and corrected keeps the first patient's data in its version 1. For a caller whose
visibility of the type is by Patient compartments (a patient token, a guardian or proxy acting for
a patient), an earlier version is visible only if that version's content lies in one of those
compartments too (`search.membership.patients_of`, the rule of R4 CompartmentDefinition/patient
applied to the version in hand). Criteria without a compartment (a staff or system token,
granular scopes alone) keep the current-version rule.
"""

from __future__ import annotations

import orjson

from ..search import local_base
from ..search.membership import patients_of
from .authz import visibility


def compartments_for_versions(principal, res_type: str) -> frozenset[str] | None:
    """The Patient ids whose compartments bound the versions `principal` may see of `res_type`;
    None when the current-version rule alone applies (unrestricted, or a criterion without a
    compartment)."""
    if principal.unrestricted:
        return None
    vis = visibility(principal, res_type, "r")
    if not vis:
        return None  # everything (None), or nothing ([]: refused before any version is read)
    return patient_compartments(vis)


def patient_compartments(vis) -> frozenset[str] | None:
    """The Patient ids of visibility criteria that are all Patient compartments; None when one
    is not (another compartment, or none: search parameters alone)."""
    ids = set()
    for c in vis:
        if not c.compartment or c.compartment[0] != "Patient":
            return None
        ids.add(c.compartment[1])
    return frozenset(ids)


def version_visible(res_type: str, content: bytes | None, compartments: frozenset[str] | None, base_url: str = "") -> bool:
    """Whether a stored version (its JSON bytes; None for a deletion) is within `compartments`;
    `base_url`: the request's base, under which an absolute reference to it counts as local, as
    when the version was indexed."""
    if compartments is None or content is None:
        return True
    try:
        resource = orjson.loads(content)
    except orjson.JSONDecodeError:
        return False
    with local_base.serving(base_url):
        return any(p in compartments for p in patients_of(res_type, resource))
