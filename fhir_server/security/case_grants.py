"""The case-consent table: which cases a patient's Consents share, and when.

Per-case consent ("sagsbaseret samtykke", docs/consent.md): a case's documents reach its
handlers only while a Consent of the patient is in force whose permit provision names the
case in `provision.data` (and no deny provision in force names it). To decide that inside
a search's SQL — for every document of every patient a staff search may return — the
provisions are kept, per case, in the table `case_consent_grants` (storage.schema):

- `rows_for(consent_id, consent)`: one row per (case, kind) of every provision of an
  `active` Consent (R4 Consent.status; other statuses share nothing), with the effective
  period of the provision: its own `period` intersected with its ancestors' (R4: nested
  provisions are exceptions inside their parent). `kind` is the provision's `type`, else
  its parent's, else `permit`. Case types: Claim, EpisodeOfCare, Encounter, CarePlan.
- `on_consent_change`: a change subscriber (fhir_server.events) that rewrites the rows of
  one Consent in the write's own transaction: a revocation is visible to the next request.
- `in_force(g, now)`: the SQL condition "this row's period covers `now`" — expiry needs no
  write at all.
- `consented_cases(conn, patient_id, cases)`: the same rule in Python terms, for one
  document (the content download and the waiting-for-consent tag).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, delete, or_, select

from .. import clock, events
from ..storage.schema import case_consent_grants as grants
from .consent_rules import IN_FORCE_STATUSES, parse_instant

CASE_TYPES = ("Claim", "EpisodeOfCare", "Encounter", "CarePlan")


def _case(ref) -> tuple[str, str] | None:
    if not isinstance(ref, str) or "/" not in ref:
        return None
    rtype, rid = ref.split("/")[-2:]
    return (rtype, rid) if rtype in CASE_TYPES and rid and len(rid) <= 64 else None


def rows_for(consent_id: str, consent: dict | None) -> list[dict]:
    """The table rows of one Consent (see the module docstring); [] when not `active`."""
    if not consent or consent.get("status") not in IN_FORCE_STATUSES:
        return []
    patient = _case_patient(consent)
    if patient is None:
        return []
    out: list[dict] = []
    seen: set = set()

    def walk(p, kind: str, start: datetime | None, end: datetime | None) -> None:
        if not isinstance(p, dict):
            return
        kind = p.get("type") if p.get("type") in ("permit", "deny") else kind
        period = p.get("period") if isinstance(p.get("period"), dict) else {}
        own_start, own_end = parse_instant(period.get("start")), parse_instant(period.get("end"), end=True)
        start = max(filter(None, (start, own_start)), default=None)
        end = min(filter(None, (end, own_end)), default=None)
        for d in p.get("data") or []:
            case = _case(((d.get("reference") or {}).get("reference")) if isinstance(d, dict) else None)
            key = (case, kind, start, end)
            if case and key not in seen:
                seen.add(key)
                out.append({"consent_id": consent_id, "patient_id": patient, "case_type": case[0], "case_id": case[1],
                            "kind": kind, "starts": start, "ends": end})
        for child in p.get("provision") or []:
            walk(child, kind, start, end)

    walk(consent.get("provision"), "permit", None, None)
    return out


def _case_patient(consent: dict) -> str | None:
    ref = (consent.get("patient") or {}).get("reference") if isinstance(consent.get("patient"), dict) else None
    if isinstance(ref, str) and "/" in ref:
        rtype, rid = ref.split("/")[-2:]
        if rtype == "Patient" and rid and len(rid) <= 64:
            return rid
    return None


def write_rows(conn: Connection, consent_id: str, consent: dict | None) -> None:
    """Replace the rows of Consent/`consent_id` by those of its version `consent` (None: deleted)."""
    conn.execute(delete(grants).where(grants.c.consent_id == consent_id))
    rows = rows_for(consent_id, consent)
    if rows:
        conn.execute(grants.insert(), rows)


def on_consent_change(conn: Connection, change: events.ResourceChange) -> None:
    """Change subscriber for Consent writes (create, update, patch, delete)."""
    write_rows(conn, change.res_id, change.new)


def setup() -> None:
    events.subscribe(on_consent_change, types=("Consent",))


def in_force(g, now: datetime):
    """SQL: the row (alias `g` of case_consent_grants) covers the instant `now`."""
    return and_(or_(g.c.starts.is_(None), g.c.starts <= now), or_(g.c.ends.is_(None), g.c.ends > now))


def consented_cases(conn: Connection, patient_id: str, cases: list[str]) -> set[str]:
    """Those of `cases` ("Claim/1", ...) that a Consent of Patient/`patient_id` in force
    permits sharing now, and none denies."""
    keys = [c for c in (_case(ref) for ref in cases) if c]
    if not keys:
        return set()
    g = grants
    now = clock.now()
    stmt = select(g.c.case_type, g.c.case_id, g.c.kind).where(
        g.c.patient_id == patient_id, g.c.case_id.in_(sorted({k[1] for k in keys})), in_force(g, now))
    permit, deny = set(), set()
    for row in conn.execute(stmt):
        (permit if row.kind == "permit" else deny).add(f"{row.case_type}/{row.case_id}")
    return {c for c in cases if c in permit and c not in deny}
