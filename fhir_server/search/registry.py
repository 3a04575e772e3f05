"""Search parameters per resource type, loaded once from resources/search-parameters.json.

The JSON is derived from the official R4 definitions by
scripts/derive_search_parameters.py, so start-up never parses the 40 MB bundles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parents[2] / "resources"

# Resource-level parameters served from the resources table itself, not an index.
COLUMN_PARAMS = {"_id", "_lastUpdated"}
# Parameters with no usable expression that we do not index (special/unsupported).
UNINDEXED = {"_query", "_text", "_content"}


@dataclass(frozen=True)
class Component:
    code: str
    type: str
    expression: str


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    url: str
    description: str
    expression: str | None
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    base: tuple[str, ...] = field(default_factory=tuple)
    # A custom parameter awaiting its $reindex: indexed on write, not searchable yet.
    pending: bool = False

    @property
    def supported(self) -> bool:
        """Whether a search on this parameter works (for the CapabilityStatement)."""
        if self.pending:
            return False
        return self.code in COLUMN_PARAMS or (self.indexed and self.code not in UNINDEXED)

    @property
    def indexed(self) -> bool:
        """Whether write-time extraction produces rows for this parameter."""
        return bool(self.expression) and self.code not in COLUMN_PARAMS and self.type != "special"


@lru_cache(maxsize=1)
def _doc() -> dict:
    return json.loads((RESOURCES_DIR / "search-parameters.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def resource_types() -> frozenset[str]:
    path = RESOURCES_DIR / "resource-types.json"
    if path.exists():
        return frozenset(json.loads(path.read_text()))
    return frozenset(t for p in _doc()["params"] for t in p["base"] if t not in ("Resource", "DomainResource"))


def is_resource_type(name: str) -> bool:
    return name in resource_types()


def _make(p: dict, res_type: str) -> SearchParam:
    expr = (p.get("expr") or {}).get(res_type)
    comps = tuple(Component(c["code"], c["type"], c["expression"]) for c in p.get("components", ()))
    return SearchParam(
        code=p["code"],
        type=p["type"],
        url=p["url"],
        description=p.get("description", ""),
        expression=expr,
        targets=tuple(p.get("target", ())),
        components=comps,
        base=tuple(p["base"]),
    )


@lru_cache(maxsize=1)
def _common() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"Resource": [], "DomainResource": []}
    for p in _doc()["params"]:
        for b in p["base"]:
            if b in out:
                out[b].append(p)
    return out


@lru_cache(maxsize=None)
def search_parameters_for(res_type: str) -> dict[str, SearchParam]:
    """All parameters searchable on ``res_type``, the Resource-level ones included."""
    result: dict[str, SearchParam] = {}
    common = _common()
    for p in common["Resource"]:
        result[p["code"]] = _make(p, "Resource")
    if res_type not in ("Bundle", "Binary", "Parameters"):
        for p in common["DomainResource"]:
            result[p["code"]] = _make(p, "DomainResource")
    for p in _by_type().get(res_type, ()):
        result[p["code"]] = _make(p, res_type)
    from .server_params import for_type

    for sp in for_type(res_type):  # the server's own (search.server_params)
        result.setdefault(sp.code, sp)
    for sp in _custom.get(res_type, ()):
        result.setdefault(sp.code, sp)  # a custom code never shadows an official one
    return result


# Custom SearchParameters by resource type, installed by search.custom.refresh().
_custom: dict[str, tuple[SearchParam, ...]] = {}


def set_custom(by_type: dict[str, tuple[SearchParam, ...]]) -> None:
    """Replace the custom parameters (pending and active) and drop cached views."""
    global _custom
    if by_type == _custom:
        return
    _custom = dict(by_type)
    search_parameters_for.cache_clear()


def official_urls() -> frozenset[str]:
    return frozenset(p["url"] for p in _doc()["params"])


@lru_cache(maxsize=1)
def _by_type() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in _doc()["params"]:
        for b in p["base"]:
            if b not in ("Resource", "DomainResource"):
                out.setdefault(b, []).append(p)
    return out


def common_parameters() -> dict[str, SearchParam]:
    """Parameters valid in a system-level search (no resource type)."""
    return {p["code"]: _make(p, "Resource") for p in _common()["Resource"]}


@lru_cache(maxsize=1)
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """resource type -> the params that place it in a Patient compartment."""
    data = json.loads((RESOURCES_DIR / "compartment-patient.json").read_text())
    return {k: tuple(v) for k, v in data.items()}


def summary_elements(res_type: str) -> list[str]:
    return _doc().get("summary", {}).get(res_type, [])


def mandatory_elements(res_type: str) -> list[str]:
    return _doc().get("mandatory", {}).get(res_type, [])


@lru_cache(maxsize=4096)
def is_boolean_token(res_type: str | None, expression: str | None) -> bool:
    """Whether a token parameter's expression selects only `boolean` elements of
    `res_type` (Patient.active, Group.actual, ...): its only values are true and false.
    Paths that are not plain element paths (functions, casts) count as not boolean."""
    if not res_type or not expression:
        return False
    from ..model.definitions import element_types

    mine = [p.strip() for p in expression.split("|") if p.strip().startswith(res_type + ".")]
    return bool(mine) and all(p.replace(".", "").isalnum() and element_types(p) == ["boolean"] for p in mine)
