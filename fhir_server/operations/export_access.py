"""Who may start, poll and download a bulk export (Bulk Data Access IG, "Authorization").

- System and Group exports need a system/ scope (SMART Backend Services).
- A Patient-level export with a patient/ (or patient user/) token covers that patient's
  own record only; the types are those its scopes may read.
- The status and file URLs answer only the one who started the job: the same issuer, client,
  subject and SMART context (`patient`, `fhirUser`). A portal's patients share one client, so the
  client alone is not enough. Everyone else gets 404, as for an unknown job. A file is served
  only while the caller's scopes still read its resource type. The manifest says
  `requiresAccessToken: true`.
"""

from __future__ import annotations

from ..errors import FhirError
from ..rest.operations import OperationCall


def owner_of(call: OperationCall) -> str | None:
    """Who may poll and download an export: issuer, client, subject and SMART context of the
    token that started it, as one string (None for the server's own unrestricted callers)."""
    p = call.ctx.principal
    if p.unrestricted:
        return None
    return "|".join((p.issuer or "", p.client_id or "", p.subject or "", p.patient or "", p.fhir_user or ""))


def check_owner(call: OperationCall, job, res_type: str | None = None) -> None:
    """404 unless the caller started `job`; with `res_type`, also unless its scopes read that type."""
    owner = job.params.get("owner")
    p = call.ctx.principal
    if p.unrestricted:
        return
    if owner is not None and owner != owner_of(call):
        raise FhirError.of(404, "not-found", f"No export job '{job.id}' (unknown, cancelled or expired)")
    if res_type:
        from ..security.authz import visibility

        if visibility(p, res_type, "r") == []:
            raise FhirError.of(403, "forbidden", f"The token's scopes do not read {res_type}, the type of this file")


def restrict_to_caller(call: OperationCall, level: str, types: list[str], patients: list[str] | None
                       ) -> tuple[list[str], list[str] | None, dict[str, list[list[tuple[str, str]]]]]:
    """A restricted token exports only what it may read: the types its scopes reach, for a
    patient/ token its own patient's record, and, where its scopes are granular
    (`patient/Observation.rs?category=...`), only the resources matching them.

    Returns (types, patients, scope_filters): scope_filters maps a type to the search
    queries one of which each exported resource must match (absent: no such limit)."""
    p = call.ctx.principal
    if p.unrestricted:
        return types, patients, {}
    from ..security.authz import visibility

    grants = {t: visibility(p, t, "r") for t in types}
    visible = [t for t in types if grants[t] != []]
    if not visible:
        raise FhirError.of(403, "forbidden", "The token's scopes reach none of the requested resource types")
    if any(grants[t] is not None and any(c.compartment for c in grants[t]) for t in visible):
        own = p.patient or ((p.fhir_user or "").split("/", 1)[1] if (p.fhir_user or "").startswith("Patient/") else None)
        if level != "type" or not own:
            raise FhirError.of(403, "forbidden", "$export of more than one patient's record needs system/ scopes")
        if patients is not None and set(patients) - {own}:
            raise FhirError.of(403, "forbidden", "A patient token may export only its own record")
        patients = [own]
    scope_filters = {}
    for t in visible:
        criteria = grants[t]
        if criteria is not None and all(c.params and not getattr(c, "exclude", False) for c in criteria):
            scope_filters[t] = [list(c.params) for c in criteria]
    return visible, patients, scope_filters


def acting_filters(call: OperationCall, types: list[str], type_filters: dict[str, list]) -> tuple[list[str], dict[str, list]]:
    """A proxy acting for a patient (security.acting) exports what their grant shows: a
    case-limited grant becomes `_typeFilter` queries AND-ed with the client's own (types
    the grant does not reach are left out). A grant that excludes denied cases cannot be
    written as filters: 403."""
    from ..security.acting import grant_criteria
    from ..security.proxies import ActingGrant

    grant = call.ctx.principal.acting
    if not isinstance(grant, ActingGrant) or (grant.full and not grant.denied):
        return types, type_filters
    kept: list[str] = []
    filters = dict(type_filters)
    for t in types:
        crit = grant_criteria(grant, t)
        if crit is None:
            kept.append(t)
            continue
        if not crit:
            filters.pop(t, None)
            continue
        if any(c.exclude for c in crit):
            raise FhirError.of(403, "forbidden", "A Consent denies part of this record to the caller; a bulk export of it is not offered")
        mine = [list(c.params) for c in crit]
        theirs = filters.get(t) or [[]]
        filters[t] = [list(q) + m for q in theirs for m in mine]
        kept.append(t)
    if not kept:
        raise FhirError.of(403, "forbidden", "The caller's grant reaches none of the requested resource types")
    return kept, filters


def access_conditions(call: OperationCall, types: list[str]) -> dict[str, list[str]]:
    """The named access rules (security.authz.Criteria.conditions, e.g. the per-case consent
    for staff on DocumentReference) each exported resource of a type must satisfy; the job
    checks them batch by batch in SQL (search.access.NAMED_CONDITIONS) when it runs."""
    p = call.ctx.principal
    if p.unrestricted:
        return {}
    from ..security.authz import visibility

    out: dict[str, list[str]] = {}
    for t in types:
        names = sorted({n for c in (visibility(p, t, "r") or []) for n in c.conditions})
        if names:
            out[t] = names
    return out
