"""The "case-consent" access rule (security.case_consent) compiled into SQL.

A DocumentReference is visible to a staff member under this rule when it belongs to no
case, or when for every case it belongs to (`context.related` / `context.encounter`,
search parameters `related` and `encounter` of DocumentReference, pointing at a Claim,
EpisodeOfCare, Encounter or CarePlan):

- a Consent of the document's patient (`subject`) in force now permits sharing the case
  (table `case_consent_grants`, kept by security.case_grants) AND shares it with this
  staff member: when that Consent names staff actors (Practitioner, PractitionerRole,
  Organization, CareTeam; in any of its provisions: search parameters `actor` and
  `provision-actor`), only with those; else with the case's handlers (`handler_condition`);
- and no Consent in force denies it.

A Binary is visible under the rule unless its `securityContext` (search parameter
`security-context`, search.server_params) is a DocumentReference the rule hides.

The staff member is the token's fhirUser (`Practitioner/x` or `PractitionerRole/y`).
"Names the staff member" (`names_staff`) means a reference to: that Practitioner or
PractitionerRole; a PractitionerRole of that Practitioner (or, for a PractitionerRole, its
Practitioner); the Organization of one of those PractitionerRoles; a CareTeam whose
`participant` (member) is any of these. A token naming no staff member names nobody.

Only the search index, the resources' keys and the grants table are read, through
their indexes.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select, true
from sqlalchemy.sql import FromClause

from .. import clock
from ..security.case_grants import CASE_TYPES, in_force
from ..storage.schema import case_consent_grants, idx_reference, resources

CASE_PARAMS = ("related", "encounter")
# the Consent's actors: `actor` (R4: the root provision's), `provision-actor` (every provision's,
# search.server_params)
ACTOR_PARAMS = ("actor", "provision-actor")
STAFF_ACTOR_TYPES = ("Practitioner", "PractitionerRole", "Organization", "CareTeam")


def staff_of(condition_name: str) -> tuple[str, str] | None:
    """The staff member ("Practitioner", "9") a condition name "case-consent:Practitioner/9" carries."""
    ref = condition_name.partition(":")[2]
    rtype, _, rid = ref.partition("/")
    return (rtype, rid) if rtype in ("Practitioner", "PractitionerRole") and rid else None


def case_consent_condition(res_type: str, r: FromClause, staff: tuple[str, str] | None = None) -> ColumnElement:
    """The condition on alias `r` of the resources table (true for types other than
    DocumentReference and Binary) for the staff member `staff`."""
    if res_type == "DocumentReference":
        return _document_condition(r, staff)
    if res_type == "Binary":
        sc = idx_reference.alias()
        doc = resources.alias()
        return not_(exists().where(
            sc.c.res_pk == r.c.pk, sc.c.res_type == "Binary", sc.c.param == "security-context",
            sc.c.target_type == "DocumentReference",
            doc.c.res_type == "DocumentReference", doc.c.res_id == sc.c.target_id, doc.c.deleted == false(),
            not_(_document_condition(doc, staff))))
    return true()


def _document_condition(r: FromClause, staff: tuple[str, str] | None) -> ColumnElement:
    now = clock.now()
    case = idx_reference.alias()
    subject = idx_reference.alias()
    patient_of_doc = select(subject.c.target_id).where(
        subject.c.res_pk == r.c.pk, subject.c.res_type == "DocumentReference", subject.c.param == "subject",
        subject.c.target_type == "Patient").correlate(r)  # explicitly: r is two levels up

    def grants(kind: str) -> FromClause:
        return case_consent_grants.alias()

    p = grants("permit")
    consent = resources.alias()
    actor = idx_reference.alias()
    actor_rows = and_(actor.c.res_pk == consent.c.pk, actor.c.res_type == "Consent", actor.c.param.in_(ACTOR_PARAMS),
                      actor.c.target_type.in_(STAFF_ACTOR_TYPES))
    names_actor = idx_reference.alias()
    to_this_staff = or_(
        exists().where(names_actor.c.res_pk == consent.c.pk, names_actor.c.res_type == "Consent",
                       names_actor.c.param.in_(ACTOR_PARAMS), names_staff(names_actor.c.target_type, names_actor.c.target_id, staff)),
        and_(not_(exists().where(actor_rows)), handler_condition(case, staff)))
    permit = exists().where(
        p.c.case_id == case.c.target_id, p.c.case_type == case.c.target_type, p.c.patient_id.in_(patient_of_doc),
        p.c.kind == "permit", in_force(p, now),
        consent.c.res_type == "Consent", consent.c.res_id == p.c.consent_id, to_this_staff)
    d = grants("deny")
    deny = exists().where(
        d.c.case_id == case.c.target_id, d.c.case_type == case.c.target_type, d.c.patient_id.in_(patient_of_doc),
        d.c.kind == "deny", in_force(d, now))
    shared = and_(permit, not_(deny))
    return not_(exists().where(
        case.c.res_pk == r.c.pk, case.c.res_type == "DocumentReference", case.c.param.in_(CASE_PARAMS),
        case.c.target_type.in_(CASE_TYPES), not_(shared)))


def handler_condition(case: FromClause, staff: tuple[str, str] | None) -> ColumnElement:
    """SQL: the staff member handles the case (case_type, case_id columns): the case resource
    names them (search parameter `case-handler`, search.server_params), or a Task of the case
    (`focus` or `based-on` the case) has them as `owner`. `case`: the alias of the case's
    reference row (target_type, target_id), correlated explicitly (it is levels up)."""
    if staff is None:
        return false()
    case_type, case_id = case.c.target_type, case.c.target_id
    case_row = resources.alias()
    named = idx_reference.alias()
    by_case = exists().where(
        case_row.c.res_type == case_type, case_row.c.res_id == case_id, case_row.c.deleted == false(),
        named.c.res_pk == case_row.c.pk, named.c.res_type == case_type, named.c.param == "case-handler",
        names_staff(named.c.target_type, named.c.target_id, staff)).correlate(case)
    task_of = idx_reference.alias()
    owner = idx_reference.alias()
    by_task = exists().where(
        task_of.c.res_type == "Task", task_of.c.param.in_(("focus", "based-on")),
        task_of.c.target_type == case_type, task_of.c.target_id == case_id,
        owner.c.res_pk == task_of.c.res_pk, owner.c.res_type == "Task", owner.c.param == "owner",
        names_staff(owner.c.target_type, owner.c.target_id, staff)).correlate(case)
    return or_(by_case, by_task)


def names_staff(ref_type, ref_id, staff: tuple[str, str] | None, teams: bool = True) -> ColumnElement:
    """SQL: the reference (ref_type, ref_id columns) names the staff member (module docstring)."""
    if staff is None:
        return false()
    stype, sid = staff
    role = resources.alias()
    link = idx_reference.alias()
    other = idx_reference.alias()
    if stype == "Practitioner":
        mine = and_(link.c.res_type == "PractitionerRole", link.c.param == "practitioner",
                    link.c.target_type == "Practitioner", link.c.target_id == sid)
        roles = select(role.c.res_id).where(mine, role.c.pk == link.c.res_pk, role.c.deleted == false())
        orgs = select(other.c.target_id).where(mine, other.c.res_pk == link.c.res_pk, other.c.param == "organization",
                                               other.c.target_type == "Organization")
        alts = [and_(ref_type == "Practitioner", ref_id == sid),
                and_(ref_type == "PractitionerRole", ref_id.in_(roles)),
                and_(ref_type == "Organization", ref_id.in_(orgs))]
    else:
        this_role = and_(role.c.res_type == "PractitionerRole", role.c.res_id == sid, role.c.deleted == false(),
                         link.c.res_pk == role.c.pk, link.c.res_type == "PractitionerRole")
        alts = [and_(ref_type == "PractitionerRole", ref_id == sid),
                and_(ref_type == "Practitioner", ref_id.in_(select(link.c.target_id).where(
                    this_role, link.c.param == "practitioner", link.c.target_type == "Practitioner"))),
                and_(ref_type == "Organization", ref_id.in_(select(link.c.target_id).where(
                    this_role, link.c.param == "organization", link.c.target_type == "Organization")))]
    if teams:
        team = resources.alias()
        member = idx_reference.alias()
        alts.append(and_(ref_type == "CareTeam", exists().where(
            team.c.res_type == "CareTeam", team.c.res_id == ref_id, team.c.deleted == false(),
            member.c.res_pk == team.c.pk, member.c.res_type == "CareTeam", member.c.param == "participant",
            names_staff(member.c.target_type, member.c.target_id, staff, teams=False))))
    return or_(*alts)
