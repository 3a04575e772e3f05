"""$operations built on the storage and index tables ($export, $everything).

Shared here: which resources are in a Patient's compartment, answered from the
reference index (`idx_reference`) rather than by reading resource content.
"""

from __future__ import annotations

import json
from functools import lru_cache

from sqlalchemy import and_, false, or_

from ..model.definitions import RESOURCES_DIR
from ..storage.schema import idx_reference


@lru_cache(maxsize=1)
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """Resource type -> the search parameters that put it in a Patient's compartment
    (from the official CompartmentDefinition; types with no parameter are left out)."""
    raw = json.loads((RESOURCES_DIR / "compartment-patient.json").read_text(encoding="utf-8"))
    return {t: tuple(ps) for t, ps in raw.items() if ps}


def compartment_ref_condition(types: set[str] | None, ref=idx_reference):
    """Index rows linking a resource to a Patient through a compartment parameter."""
    comp = patient_compartment()
    pairs = [and_(ref.c.res_type == t, ref.c.param.in_(ps)) for t, ps in comp.items() if types is None or t in types]
    if not pairs:
        return false()
    return and_(ref.c.target_type == "Patient", or_(*pairs))
