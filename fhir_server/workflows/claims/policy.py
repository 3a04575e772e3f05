"""Claim policies as data (`mappings/claims/policies.yaml`): which treatments an
insurer approves by itself, how many at first, for how long, and who handles
what a person must decide."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_FILE = Path(__file__).resolve().parents[3] / "mappings" / "claims" / "policies.yaml"


@dataclass(frozen=True)
class Policy:
    id: str
    initial_treatments: int
    approval_valid_days: int
    treatment_types: dict[tuple[str, str], str]  # (system, code) -> display
    match: tuple[str, ...] = ()
    case_team: str = ""
    bills_team: str = ""
    reimbursement_days: int = 14
    guarantee_language: str = "da"

    def covers(self, coding: dict) -> bool:
        return (coding.get("system"), coding.get("code")) in self.treatment_types

    def display(self, coding: dict) -> str:
        return self.treatment_types.get((coding.get("system"), coding.get("code"))) or coding.get("display") or coding.get("code") or "?"


@dataclass(frozen=True)
class PolicyBook:
    policies: tuple[Policy, ...]
    default: Policy

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PolicyBook":
        data = yaml.safe_load(Path(path or DEFAULT_FILE).read_text(encoding="utf-8")) or {}
        policies, default = [], None
        for p in data.get("policies") or []:
            pol = Policy(
                id=str(p["id"]),
                initial_treatments=int(p["initial_treatments"]),
                approval_valid_days=int(p["approval_valid_days"]),
                treatment_types={(t["system"], t["code"]): t.get("display") or t["code"] for t in p.get("treatment_types") or []},
                match=tuple(str(m) for m in p.get("match") or ()),
                case_team=str(p.get("case_team") or ""),
                bills_team=str(p.get("bills_team") or ""),
                reimbursement_days=int(p.get("reimbursement_days") or 14),
                guarantee_language=str(p.get("guarantee_language") or "da"),
            )
            policies.append(pol)
            if p.get("default"):
                default = pol
        if default is None:
            raise ValueError(f"{path or DEFAULT_FILE}: one policy must be marked default: true")
        return cls(tuple(policies), default)

    def for_insurer(self, keys: list[str]) -> Policy:
        """The first policy matching any of the insurer `keys` (reference or system|value), else the default."""
        for pol in self.policies:
            if any(k in pol.match for k in keys):
                return pol
        return self.default

    def for_claim(self, coverage_keys: list[str], insurer_keys: list[str]) -> Policy:
        """The policy of a claim: the first matching one of its Coverages (`Coverage/<id>`,
        an identifier `system|value`, a class `class:<type>|<value>` such as
        `class:plan|DSF-PLUS`), else the first matching its insurer, else the default."""
        for pol in self.policies:
            if any(k in pol.match for k in coverage_keys):
                return pol
        return self.for_insurer(insurer_keys)


_cache: dict[str, PolicyBook] = {}


def policy_book(path: str | None = None) -> PolicyBook:
    key = str(path or DEFAULT_FILE)
    if key not in _cache:
        _cache[key] = PolicyBook.load(key)
    return _cache[key]
