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


def restrict_to_caller(call: OperationCall, level: str, types: list[str], patients: list[str] | None) -> tuple[list[str], list[str] | None]:
    """A restricted token exports only what it may read: the types its scopes reach and,
    for a patient/ token, its own patient's record."""
    p = call.ctx.principal
    if p.unrestricted:
        return types, patients
    from ..security.authz import visibility

    visible = [t for t in types if visibility(p, t, "r") != []]
    if not visible:
        raise FhirError.of(403, "forbidden", "The token's scopes reach none of the requested resource types")
    if any(visibility(p, t, "r") is not None for t in visible):
        own = p.patient or ((p.fhir_user or "").split("/", 1)[1] if (p.fhir_user or "").startswith("Patient/") else None)
        if level != "type" or not own:
            raise FhirError.of(403, "forbidden", "$export of more than one patient's record needs system/ scopes")
        if patients is not None and set(patients) - {own}:
            raise FhirError.of(403, "forbidden", "A patient token may export only its own record")
        patients = [own]
    return visible, patients
