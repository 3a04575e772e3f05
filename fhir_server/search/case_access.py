"""The "case-consent" access rule (security.case_consent) compiled into SQL.

A DocumentReference is visible under this rule when it belongs to no case, or when for
every case it belongs to (`context.related` / `context.encounter`, search parameters
`related` and `encounter` of DocumentReference, pointing at a Claim, EpisodeOfCare,
Encounter or CarePlan) a Consent of the document's patient (`subject`) in force now
permits sharing the case and none denies it (table `case_consent_grants`, kept by
security.case_grants). Only the search index and that table are read, through their
indexes: (res_pk) on idx_reference, (case_id, case_type, patient_id) on the grants.

    NOT EXISTS (a case reference c of the document
                WHERE NOT (EXISTS permit(c, patient, now) AND NOT EXISTS deny(c, patient, now)))
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, not_, true
from sqlalchemy.sql import FromClause

from .. import clock
from ..security.case_grants import CASE_TYPES, in_force
from ..storage.schema import case_consent_grants, idx_reference

CASE_PARAMS = ("related", "encounter")


def case_consent_condition(res_type: str, r: FromClause) -> ColumnElement:
    """The condition on alias `r` of the resources table (true for other types)."""
    if res_type != "DocumentReference":
        return true()
    now = clock.now()
    case = idx_reference.alias("cc_case")

    def grant(kind: str) -> ColumnElement:
        subject = idx_reference.alias(f"cc_subject_{kind}")
        g = case_consent_grants.alias(f"cc_{kind}")
        return exists().where(
            subject.c.res_pk == r.c.pk, subject.c.res_type == "DocumentReference", subject.c.param == "subject",
            subject.c.target_type == "Patient",
            g.c.case_id == case.c.target_id, g.c.case_type == case.c.target_type, g.c.patient_id == subject.c.target_id,
            g.c.kind == kind, in_force(g, now))

    shared = and_(grant("permit"), not_(grant("deny")))
    return not_(exists().where(
        case.c.res_pk == r.c.pk, case.c.res_type == "DocumentReference", case.c.param.in_(CASE_PARAMS),
        case.c.target_type.in_(CASE_TYPES), not_(shared)))
