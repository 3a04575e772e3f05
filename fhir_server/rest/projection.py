"""`_summary` and `_elements`: the subsets of a resource a client may ask for.

`_summary=true` keeps the elements flagged isSummary, inside backbone elements too;
a subsetted resource is tagged SUBSETTED so that nobody mistakes it for whole.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from ..errors import FhirError

_RESOURCES = Path(__file__).resolve().parents[2] / "resources"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _summary_table() -> dict:
    return json.loads((_RESOURCES / "summary-elements.json").read_text())


def _matches(name: str, patterns: list[str]) -> bool:
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1]) and name[len(p) - 1 : len(p)].isupper()) for p in patterns)


def _tag_subsetted(out: dict) -> dict:
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = tags + [SUBSETTED]
    out["meta"] = meta
    return out


def _summary_inside(value, path: str, nested: dict):
    """Trim the backbone elements under `path` to their summary children."""
    keep = nested.get(path)
    if keep is None:
        return value
    if isinstance(value, list):
        return [_summary_inside(v, path, nested) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: _summary_inside(v, f"{path}.{k.lstrip('_')}", nested) for k, v in value.items() if _matches(k.lstrip("_"), keep)}


def validate_summary(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in ("true", "false", "text", "data", "count"):
        raise FhirError.of(400, "invalid", f"Invalid _summary value '{value}': use true, false, text, data or count", "_summary")
    return value


def project(resource: dict, summary: str | None, elements: list[str] | None) -> dict:
    """Return the subset of `resource` asked for (the input is not modified)."""
    if summary in (None, "false") and not elements:
        return resource
    info = _summary_table().get(resource.get("resourceType"), {"summary": [], "mandatory": []})
    if summary == "true":
        keep = info["summary"]
        out = {k: v for k, v in resource.items() if k in _ALWAYS or _matches(k.lstrip("_"), keep)}
        nested = info.get("nested") or {}
        if nested:
            out = {k: _summary_inside(v, k.lstrip("_"), nested) for k, v in out.items()}
    elif summary == "text":
        keep = ["text"] + info["mandatory"]
        out = {k: v for k, v in resource.items() if k in _ALWAYS or _matches(k.lstrip("_"), keep)}
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    else:
        wanted = {e.strip().split(".")[-1] for e in elements or [] if e.strip()}
        out = {k: v for k, v in resource.items() if k in _ALWAYS or k.lstrip("_") in wanted}
    return _tag_subsetted(out)
