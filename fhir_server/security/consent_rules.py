"""Evaluating one R4 Consent for one acting person (pure: no database, no clock of its own).

FHIR R4 Consent (http://hl7.org/fhir/R4/consent.html): a Consent is in force when
`status` is `active` and the root `provision.period` (if any) covers the instant given.
Provisions nest: the root provision is the base rule, nested `provision`s are exceptions.
A provision concerns the acting person when its own `actor` list names them, or, when it
names no actor, when its parent concerns them.  Its `type` is its own, else its parent's,
else `permit`; a nested provision's `period` must cover the instant as well.

`rules_for(consent, now, names_actor)` -> a list of `ProvisionRule`:
- kind `permit` or `deny`;
- `data`: references from `provision.data` ("Claim/1", ...), empty = everything of the
  patient; with `instance_only` when every `data.meaning` is `instance` (just those
  resources; otherwise the resource and what is tied to it, the case);
- `actions`: consentaction codes from `provision.action`, None = every action;
- `role`: the actor's role code (v3 RoleCode) where given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Callable

IN_FORCE_STATUSES = ("active",)
REVOKED_STATUSES = ("inactive", "rejected", "entered-in-error")


@dataclass(frozen=True)
class ProvisionRule:
    consent_id: str
    kind: str  # permit | deny
    data: tuple[str, ...] = ()
    instance_only: bool = False
    actions: frozenset[str] | None = None
    role: str | None = None
    end: datetime | None = None  # when the provision stops (its period's end), None: open


def parse_instant(text, end: bool = False) -> datetime | None:
    """A FHIR date/dateTime/instant as a UTC instant; a date alone covers its whole day
    (`end=True` gives the first instant after it). None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        if len(text) <= 10:
            parts = [int(p) for p in text.split("-")]
            y, m, d = (parts + [1, 1])[:3]
            start = datetime(y, m, d, tzinfo=timezone.utc)
            if not end:
                return start
            if len(parts) == 1:
                return start.replace(year=y + 1)
            if len(parts) == 2:
                return start.replace(year=y + (m == 12), month=m % 12 + 1)
            return datetime.fromordinal(date(y, m, d).toordinal() + 1).replace(tzinfo=timezone.utc)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def period_covers(period, now: datetime) -> bool:
    """Whether a FHIR Period covers `now` (start inclusive, end exclusive at its precision)."""
    if not isinstance(period, dict):
        return True
    start = parse_instant(period.get("start"))
    end = parse_instant(period.get("end"), end=True)
    if start and now < start:
        return False
    if end and now >= end:
        return False
    return True


def in_force(consent: dict, now: datetime) -> bool:
    """Active and within the root provision's period."""
    if consent.get("status") not in IN_FORCE_STATUSES:
        return False
    root = consent.get("provision")
    return period_covers(root.get("period") if isinstance(root, dict) else None, now)


def _codes(concept, system: str | None = None) -> list[str]:
    out = []
    for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
        if isinstance(c, dict) and isinstance(c.get("code"), str) and (system is None or c.get("system") in (system, None)):
            out.append(c["code"])
    return out


def actor_refs(provision: dict) -> list[tuple[dict, str | None]]:
    """(reference element, role code) per provision.actor."""
    out = []
    for a in provision.get("actor") or []:
        if isinstance(a, dict) and isinstance(a.get("reference"), dict):
            roles = _codes(a.get("role"))
            out.append((a["reference"], roles[0] if roles else None))
    return out


def rules_for(consent: dict, now: datetime, names_actor: Callable[[dict], bool]) -> list[ProvisionRule]:
    """The provisions of `consent` that concern the actor (see the module docstring)."""
    if not in_force(consent, now):
        return []
    cid = str(consent.get("id") or "")
    out: list[ProvisionRule] = []

    def walk(p: dict, parent_applies: bool, parent_role: str | None, parent_type: str) -> None:
        if not isinstance(p, dict) or not period_covers(p.get("period"), now):
            return
        kind = p.get("type") if p.get("type") in ("permit", "deny") else parent_type
        actors = actor_refs(p)
        role = parent_role
        if actors:
            hits = [r for ref, r in actors if names_actor(ref)]
            applies = bool(hits)
            role = next((r for r in hits if r), None)
        else:
            applies = parent_applies
        if applies:
            data, meanings = [], []
            for d in p.get("data") or []:
                ref = (d.get("reference") or {}).get("reference") if isinstance(d, dict) else None
                if isinstance(ref, str) and "/" in ref:
                    data.append("/".join(ref.split("/")[-2:]))
                    meanings.append(d.get("meaning"))
            actions = frozenset(c for a in p.get("action") or [] for c in _codes(a)) or None
            end = parse_instant((p.get("period") or {}).get("end"), end=True) if isinstance(p.get("period"), dict) else None
            out.append(ProvisionRule(cid, kind, tuple(data), bool(meanings) and all(m == "instance" for m in meanings), actions, role, end))
        for child in p.get("provision") or []:
            walk(child, applies, role, kind)

    root = consent.get("provision")
    if isinstance(root, dict):
        walk(root, False, None, "permit")
    return out
