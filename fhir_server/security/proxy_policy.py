"""The acting-for policy as data: mappings/consent/proxy_policy.yaml and the self-service
ages of mappings/national_identifiers.yaml, plus the age rule that reads them.

Shapes:
- `policy()` -> `ProxyPolicy` (frozen; loaded once per process: the files are part of
  the release, not of the data);
- `self_service_until(patient)` -> (date the implicit guardian access ends, country) or
  None when neither a national number with a birth date nor `birthDate` (with a known
  country) is there.  On that date itself the access has ended ("on the birthday").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import yaml

POLICY_PATH = Path(__file__).resolve().parents[2] / "mappings" / "consent" / "proxy_policy.yaml"


@dataclass(frozen=True)
class ProxyPolicy:
    role_system: str
    guardian_relationships: frozenset[str]
    proxy_roles: frozenset[str]
    case_types: tuple[str, ...]
    case_links: dict[str, tuple[str, ...]]
    action_system: str
    actions: dict[str, frozenset[str]]  # read | create | update | delete -> consentaction codes
    templates: dict[str, dict]
    extra_category_codes: dict[str, frozenset[str]]

    def template(self, country: str | None) -> dict:
        return self.templates.get(country or "", self.templates.get("default", {}))


@lru_cache(maxsize=1)
def policy() -> ProxyPolicy:
    raw = yaml.safe_load(POLICY_PATH.read_text(encoding="utf-8"))
    return ProxyPolicy(
        role_system=raw["role_system"],
        guardian_relationships=frozenset(raw["guardian_relationships"]),
        proxy_roles=frozenset(raw["proxy_roles"]),
        case_types=tuple(raw["case_types"]),
        case_links={k: tuple(v or ()) for k, v in (raw.get("case_links") or {}).items()},
        action_system=raw["action_system"],
        actions={k: frozenset(v) for k, v in raw["actions"].items()},
        templates=dict(raw.get("consent_templates") or {}),
        extra_category_codes={k: frozenset(v) for k, v in (raw.get("extra_category_codes") or {}).items()},
    )


@lru_cache(maxsize=1)
def _age_by_country() -> dict[str, int]:
    from ..identifiers import all_schemes

    out: dict[str, int] = {}
    for s in all_schemes():
        out.setdefault(s.country.upper(), s.self_service_age)
    return out


def self_service_age(country: str) -> int | None:
    """The age from which a person of `country` (ISO 3166 alpha-2) acts for themselves."""
    return _age_by_country().get(country.upper())


def add_years(d: date, years: int) -> date:
    """`d` plus whole years; 29 February becomes 1 March in a common year."""
    try:
        return d.replace(year=d.year + years)
    except ValueError:
        return date(d.year + years, 3, 1)


def _parse_date(text) -> date | None:
    if not isinstance(text, str) or len(text) < 10:
        return None  # a year or year-month alone does not give the birthday
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def birth_and_country(patient: dict) -> tuple[date | None, str | None]:
    """(birth date, country) of a Patient: the national number first (its scheme gives the
    country and the number the date), else `birthDate` and the first address country."""
    from ..identifiers import birth_date, scheme_for_system

    country = None
    for ident in patient.get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        scheme = scheme_for_system(ident.get("system"))
        if scheme is None or not isinstance(ident.get("value"), str):
            continue
        country = country or scheme.country
        if scheme.encodes_birth_date:
            born = birth_date(ident["system"], ident["value"])
            if born:
                return born, scheme.country
    born = _parse_date(patient.get("birthDate"))
    if country is None:
        for addr in patient.get("address") or []:
            c = addr.get("country") if isinstance(addr, dict) else None
            if isinstance(c, str) and self_service_age(c.strip()) is not None:
                country = c.strip().upper()
                break
    return born, country


def self_service_from(patient: dict) -> tuple[date, str] | None:
    """The date from which the patient acts for themselves (guardians' implicit access
    ends that day), with the country whose age applied; None when unknown."""
    born, country = birth_and_country(patient)
    if born is None or country is None:
        return None
    age = self_service_age(country)
    if age is None:
        return None
    return add_years(born, age), country
