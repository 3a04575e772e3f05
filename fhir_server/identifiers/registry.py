"""Scheme table loaded from mappings/national_identifiers.yaml.

The table is data so that systems, aliases and age rules can be reviewed and
changed without touching the checking code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .validators import VALIDATORS

MAPPING_PATH = Path(__file__).resolve().parents[2] / "mappings" / "national_identifiers.yaml"

_OID_PREFIX = "urn:oid:"


@dataclass(frozen=True)
class Scheme:
    """One national identifier scheme as described in the YAML table."""

    key: str
    country: str
    name: str
    system: str
    aliases: tuple[str, ...]
    type_code: str
    self_service_age: int
    majority_age: int
    validator: str
    encodes_birth_date: bool
    encodes_sex: bool
    bare_value_search: bool
    computer_name: str = field(repr=False)
    responsible: str = field(repr=False)
    description: str = field(repr=False)

    def all_systems(self) -> tuple[str, ...]:
        """Canonical system first, then aliases, then bare forms of OIDs."""
        uris = (self.system, *self.aliases)
        bare = tuple(u[len(_OID_PREFIX):] for u in uris if u.lower().startswith(_OID_PREFIX))
        return uris + bare


def _build(entry: dict[str, Any], defaults: dict[str, Any]) -> Scheme:
    e = {**defaults, **entry}
    if e["validator"] not in VALIDATORS:
        raise ValueError(f"{e['key']}: unknown validator {e['validator']!r}")
    return Scheme(
        key=e["key"],
        country=str(e["country"]),
        name=e["name"],
        system=e["system"],
        aliases=tuple(e.get("aliases") or ()),
        type_code=e["type_code"],
        self_service_age=int(e["self_service_age"]),
        majority_age=int(e["majority_age"]),
        validator=e["validator"],
        encodes_birth_date=bool(e.get("birth_date", False)),
        encodes_sex=bool(e.get("sex", False)),
        bare_value_search=bool(e.get("bare_value_search", True)),
        computer_name=e.get("computer_name") or e["key"],
        responsible=e.get("responsible", ""),
        description=" ".join(str(e.get("description", "")).split()),
    )


@cache
def _table() -> tuple[tuple[Scheme, ...], dict[str, Scheme]]:
    """Load once; refuse a table where two schemes claim the same system."""
    raw = yaml.safe_load(MAPPING_PATH.read_text(encoding="utf-8"))
    defaults = raw.get("defaults") or {}
    schemes = tuple(_build(e, defaults) for e in raw["schemes"])
    index: dict[str, Scheme] = {}
    for s in schemes:
        for uri in s.all_systems():
            k = _lookup_key(uri)
            if k in index and index[k] is not s:
                raise ValueError(f"system {uri} claimed by {index[k].key} and {s.key}")
            index[k] = s
    return schemes, index


def _lookup_key(system: str) -> str:
    """URIs are case-sensitive, but the urn:oid: prefix is not."""
    system = system.strip()
    if system.lower().startswith(_OID_PREFIX):
        return system[len(_OID_PREFIX):]
    return system


def all_schemes() -> list[Scheme]:
    """Every scheme in table order."""
    return list(_table()[0])


def scheme_for_system(system: str | None) -> Scheme | None:
    """Scheme for a canonical system, an alias, or a bare OID; else None."""
    if not system:
        return None
    return _table()[1].get(_lookup_key(system))


def canonical_system(system: str | None) -> str | None:
    """The canonical URI of a national scheme, or the input unchanged."""
    s = scheme_for_system(system)
    return s.system if s else system
