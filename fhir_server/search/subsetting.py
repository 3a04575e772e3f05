"""`_summary` and `_elements` on a search page's stored bytes (search.engine.assemble_search).

Stored bytes are embedded untouched unless a subset is asked for; a subset keeps the
resource's mandatory elements and is tagged SUBSETTED (http://hl7.org/fhir/R4/search.html#summary).
rest/projection.py subsets single resources (reads) by its own, finer rules (summary
elements inside backbone elements); the two are not merged here.
"""

from __future__ import annotations

import orjson

from . import registry

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}


def subset_stored(content: bytes, res_type: str, summary: str | None, elements: list[str] | None):
    """Embed stored bytes untouched unless _summary/_elements ask for a subset."""
    if not summary and elements is None:
        return orjson.Fragment(content)
    res = orjson.loads(content)
    keep: set[str] | None
    if elements is not None:
        keep = set(elements) | set(registry.mandatory_elements(res_type))
    elif summary == "true":
        keep = set(registry.summary_elements(res_type))
    elif summary == "text":
        keep = {"text"} | set(registry.mandatory_elements(res_type))
    else:  # data
        keep = None
    out = {}
    for k, v in res.items():
        if k in ("resourceType", "id", "meta"):
            out[k] = v
        elif keep is None:
            if k != "text":
                out[k] = v
        elif k in keep:
            out[k] = v
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    out["meta"] = meta
    return out
