"""Whom may this person act for, and why: the per-request resolution behind the policy.

`resolve(conn, actor, patient_id, now)` -> `ActingGrant`, from the database as it is now
(nothing cached past the request). `actor` is the logged-in person as a reference
("Patient/p" or "RelatedPerson/r", the token's fhirUser). Rules (docs/consent.md):

1. Guardian of a minor: a RelatedPerson of the patient, active, its period covering now,
   with a parent/guardian relationship (mappings/consent/proxy_policy.yaml) that resolves
   to the actor (it *is* the actor's fhirUser; or its national identifier equals one of the
   actor's, compared in normalised form; or the actor's Patient.link / a Person links it),
   while the patient is younger than the self-service age of their country
   (mappings/national_identifiers.yaml). Unknown age: no implicit access.
2. Consent-based proxy: an active Consent of the patient whose in-force permit provision
   names the actor (Patient/RelatedPerson reference or national identifier) grants the
   whole record, or with `provision.data` only those resources/cases.
3. Deny provisions naming the actor override permits and the guardian rule.

Cost: two indexed queries per request: the patient and the actor's own resource by id;
the RelatedPersons and Consents about the patient together with the Persons linking the
actor, through the reference index (res_type, param, target_id, target_type). No scans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from ..model import jsonio
from . import consent_rules
from .proxy_policy import policy, self_service_from


@dataclass
class Reason:
    """Why the actor may act for the patient (shown by Patient/$proxies)."""

    kind: str  # guardian | consent
    source: str  # RelatedPerson/x | Consent/y
    detail: str
    until: str | None = None  # ISO date/instant the reason stops holding, when known
    data: tuple[str, ...] = ()  # the case(s) a consent is limited to
    actions: tuple[str, ...] = ()  # consentaction codes a consent is limited to (empty: all)


@dataclass
class ActingGrant:
    """What `actor` may see and do of Patient/`patient` for the length of one request.

    `full`: the whole record (scopes permitting), `full_actions` the consentaction codes
    allowed (None: all). `items`: reference -> actions (None: all) for data-limited
    consents; `instance_only` those items not extended to their case. `denied_all` / `denied`
    from deny provisions (they win)."""

    actor: str
    patient: str
    full: bool = False
    full_actions: frozenset[str] | None = frozenset()
    items: dict[str, frozenset[str] | None] = field(default_factory=dict)
    instance_only: set[str] = field(default_factory=set)
    denied_all: bool = False
    denied: set[str] = field(default_factory=set)
    reasons: list[Reason] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.denied_all and (self.full or any(r not in self.denied for r in self.items))

    def allows_action(self, action_codes: frozenset[str]) -> bool:
        """Whether any grant allows one of `action_codes` (an interaction's codes)."""
        def ok(acts):
            return acts is None or bool(acts & action_codes)
        if self.denied_all:
            return False
        if self.full and ok(self.full_actions):
            return True
        return any(ok(a) for r, a in self.items.items() if r not in self.denied)


def _merge_actions(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


def _parse(stored) -> dict | None:
    if stored is None or stored.deleted or stored.content is None:
        return None
    try:
        doc = jsonio.parse_plain(stored.content)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _read(conn: Connection, ref: str) -> dict | None:
    from ..storage.repository import read_current

    rtype, _, rid = ref.partition("/")
    return _parse(read_current(conn, rtype, rid)) if rid else None


def _search(conn: Connection, res_type: str, params: list[tuple[str, str]], limit: int = 500) -> list[dict]:
    from ..search.engine import find_matches
    from ..storage.repository import read_by_pks

    pks = [pk for pk, _ in find_matches(conn, res_type, params, limit=limit)]
    return [d for d in (_parse(s) for s in read_by_pks(conn, pks)) if d is not None]


def national_ids(resource: dict) -> set[tuple[str, str]]:
    """(canonical system, normalised value) of every valid national identifier."""
    from ..identifiers import canonical_system, normalise

    out = set()
    for ident in resource.get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(system, str) or not isinstance(value, str):
            continue
        canon = canonical_system(system)
        norm = normalise(system, value) if canon else None
        if canon and norm:
            out.add((canon, norm))
    return out


@dataclass
class Actor:
    """The logged-in person and everything that identifies them."""

    ref: str
    ids: set[tuple[str, str]]
    related_persons: set[str]  # RelatedPerson/x that are this person (fhirUser, links)

    def is_named(self, reference: dict) -> bool:
        ref = reference.get("reference")
        if isinstance(ref, str) and "/" in ref:
            ref = "/".join(ref.split("/")[-2:])
            if ref == self.ref or ref in self.related_persons:
                return True
        ident = reference.get("identifier")
        if isinstance(ident, dict):
            return bool(national_ids({"identifier": [ident]}) & self.ids)
        return False


def _actor_from(actor: str, doc: dict | None, persons: list[dict]) -> Actor:
    """The Actor of a Patient (or RelatedPerson) `doc` and the Persons linking it."""
    ids: set[tuple[str, str]] = set()
    rps: set[str] = {actor} if actor.startswith("RelatedPerson/") else set()
    if doc:
        ids |= national_ids(doc)
        for link in doc.get("link") or []:
            other = ((link or {}).get("other") or {}).get("reference") if isinstance(link, dict) else None
            if isinstance(other, str) and other.startswith("RelatedPerson/"):
                rps.add(other)
    for person in persons:
        for link in person.get("link") or []:
            target = ((link or {}).get("target") or {}).get("reference") if isinstance(link, dict) else None
            if isinstance(target, str) and target.startswith("RelatedPerson/"):
                rps.add(target)
    return Actor(actor, ids, rps)


def load_actor(conn: Connection, actor: str) -> Actor:
    doc = _read(conn, actor)
    persons = _search(conn, "Person", [("link", actor)], limit=20) if actor.startswith("Patient/") else []
    return _actor_from(actor, doc, persons)


def _by_reference_stmt():
    from sqlalchemy import and_, bindparam, false, or_, select

    from ..storage.schema import idx_reference, resources

    r, x = resources, idx_reference
    about_patient = and_(x.c.res_type.in_(("RelatedPerson", "Consent")), x.c.param == "patient",
                         x.c.target_type == "Patient", x.c.target_id == bindparam("patient"))
    linking_actor = and_(x.c.res_type == "Person", x.c.param == "link",
                         x.c.target_type == bindparam("actor_type"), x.c.target_id == bindparam("actor_id"))
    by_ref = (select(r.c.res_type, r.c.res_id, r.c.content).join(x, x.c.res_pk == r.c.pk)
              .where(or_(about_patient, linking_actor), r.c.deleted == false()).distinct())
    by_id = select(r.c.res_type, r.c.res_id, r.c.content).where(
        r.c.res_type.in_(("Patient", "RelatedPerson")), r.c.res_id.in_((bindparam("patient_id"), bindparam("actor_own_id"))), r.c.deleted == false())
    return by_ref, by_id


_STMTS = None


def _patients_and_links(conn: Connection, actor: str, patient_id: str) -> dict:
    """Two indexed queries: the Patient and the actor's own resource by id; and the
    RelatedPersons and Consents about the patient with the Persons linking the actor
    (idx_reference: (res_type, param, target_id, target_type))."""
    global _STMTS
    if _STMTS is None:
        _STMTS = _by_reference_stmt()
    by_ref, by_id = _STMTS
    actor_type, _, actor_id = actor.partition("/")
    out: dict = {"patient": None, "actor": None, "RelatedPerson": [], "Consent": [], "Person": []}
    for row in conn.execute(by_id, {"patient_id": patient_id, "actor_own_id": actor_id}):
        doc = _doc(row.content)
        if row.res_type == "Patient" and row.res_id == patient_id:
            out["patient"] = doc
        if row.res_type == actor_type and row.res_id == actor_id:
            out["actor"] = doc
    for row in conn.execute(by_ref, {"patient": patient_id, "actor_type": actor_type, "actor_id": actor_id}):
        doc = _doc(row.content)
        if doc is not None:
            out[row.res_type].append(doc)
    return out


def _doc(content) -> dict | None:
    if content is None:
        return None
    try:
        doc = jsonio.parse_plain(bytes(content))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _is_actor(rp: dict, who: Actor) -> bool:
    return f"RelatedPerson/{rp.get('id')}" in who.related_persons or bool(national_ids(rp) & who.ids)


def _guardian_code(rp: dict) -> str | None:
    pol = policy()
    for concept in rp.get("relationship") or []:
        for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(c, dict) and c.get("system") == pol.role_system and c.get("code") in pol.guardian_relationships:
                return c["code"]
    return None


def resolve(conn: Connection, actor: str, patient_id: str, now: datetime, who: Actor | None = None) -> ActingGrant:
    """The grant of `actor` over Patient/`patient_id` at `now` (see the module docstring)."""
    grant = ActingGrant(actor=actor, patient=patient_id)
    docs = _patients_and_links(conn, actor, patient_id)
    patient = docs["patient"]
    if patient is None:
        return grant
    if who is None:
        who = _actor_from(actor, docs["actor"], docs["Person"])

    # 1. guardian of a minor
    for rp in docs["RelatedPerson"]:
        if rp.get("active") is False or not consent_rules.period_covers(rp.get("period"), now):
            continue
        if not _is_actor(rp, who):
            continue
        code = _guardian_code(rp)
        if code is None:
            continue
        ends = self_service_from(patient)
        if ends is None:
            continue
        until, country = ends
        if now.date() < until:
            grant.full, grant.full_actions = True, None
            grant.reasons.append(Reason("guardian", f"RelatedPerson/{rp.get('id')}",
                                        f"{code} of a child under the self-service age of {country}", until.isoformat()))

    # 2./3. consents naming the actor
    for consent in docs["Consent"]:
        for rule in consent_rules.rules_for(consent, now, who.is_named):
            source = f"Consent/{rule.consent_id}"
            if rule.kind == "deny":
                if rule.data:
                    grant.denied.update(rule.data)
                else:
                    grant.denied_all = True
                continue
            end = rule.end or consent_rules.parse_instant(((consent.get("provision") or {}).get("period") or {}).get("end"), end=True)
            reason = Reason("consent", source, f"permit{' as ' + rule.role if rule.role else ''}",
                            end.isoformat() if end else None, rule.data, tuple(sorted(rule.actions or ())))
            grant.reasons.append(reason)
            if not rule.data:
                grant.full_actions = _merge_actions(grant.full_actions, rule.actions) if grant.full else rule.actions
                grant.full = True
                continue
            for ref in rule.data:
                grant.items[ref] = _merge_actions(grant.items[ref], rule.actions) if ref in grant.items else rule.actions
                if rule.instance_only:
                    grant.instance_only.add(ref)
    if grant.denied_all:
        grant.reasons = []
    return grant


def candidates(conn: Connection, actor: str) -> list[str]:
    """Patient ids `actor` may be acting for: patients of the RelatedPersons that are the
    actor, and patients of Consents whose `actor` (search parameter: the root provision's
    actors) or `provision-actor` (every provision's) names the actor by reference or by one
    of their national identifiers."""
    who = load_actor(conn, actor)
    ids: list[str] = []

    def add(ref):
        if isinstance(ref, str) and ref.startswith("Patient/"):
            pid = ref.split("/", 1)[1]
            if pid not in ids and f"Patient/{pid}" != actor:
                ids.append(pid)

    found: dict[str, dict] = {}
    for system, value in sorted(who.ids):
        for rp in _search(conn, "RelatedPerson", [("identifier", f"{system}|{value}")], limit=100):
            found[f"RelatedPerson/{rp.get('id')}"] = rp
    for ref in who.related_persons:
        rp = found.get(ref) or _read(conn, ref)
        if rp:
            found[ref] = rp
    for rp in found.values():
        if _is_actor(rp, who):
            add(((rp.get("patient") or {}).get("reference")))
    refs = [who.ref, *sorted(who.related_persons)]
    # `actor`: the root provision's actors (R4); `provision-actor`: every provision's, nested
    # ones included (search.server_params)
    for param in ("actor", "provision-actor"):
        for ref in refs:
            for consent in _search(conn, "Consent", [(param, ref)], limit=200):
                add(((consent.get("patient") or {}).get("reference")))
        # consents naming the person only by national identifier (any alias of the system, any
        # written form: the reference index, idx_reference (res_type, param, ident_value))
        for system, value in sorted(who.ids):
            for consent in _search(conn, "Consent", [(f"{param}:identifier", f"{system}|{value}")], limit=200):
                add(((consent.get("patient") or {}).get("reference")))
    return ids
