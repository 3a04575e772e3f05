"""Search parameters this server defines itself (not in the R4 specification).

They are indexed on every write like the specification's and searchable like them:

- `case-handler` on the case types of the per-case consent (security.case_consent): every
  reference naming staff who handle the case — Claim.provider | Claim.enterer |
  Claim.careTeam.provider; EpisodeOfCare.careManager | EpisodeOfCare.team;
  Encounter.participant.individual; CarePlan.author | CarePlan.contributor |
  CarePlan.careTeam. (R4 indexes some of these under other codes, some not at all:
  EpisodeOfCare.team, CarePlan.author, CarePlan.contributor; R4's `care-manager` only
  when it is a Practitioner.)
- `provision-actor` on Consent: the actors of every provision, nested ones included
  (R4's `actor` is the root provision's only), down to NESTED_DEPTH levels; so
  `Patient/$proxies` finds a Consent that names the person only in a nested provision.
- `security-context` on Binary: Binary.securityContext (R4 defines no Binary parameter),
  so a search of Binary can follow the access rule of the resource it stands for.

Resources stored before a parameter existed get its index rows by `$reindex`.
"""

from __future__ import annotations

from functools import lru_cache

BASE = "http://fhir-server.example/SearchParameter/"

NESTED_DEPTH = 8
_PROVISION_ACTORS = " | ".join("Consent" + ".provision" * n + ".actor.reference" for n in range(1, NESTED_DEPTH + 1))

_DEFINITIONS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    # res_type -> code -> (FHIRPath expression, target types)
    "Claim": {"case-handler": ("Claim.provider | Claim.enterer | Claim.careTeam.provider",
                               ("Practitioner", "PractitionerRole", "Organization"))},
    "EpisodeOfCare": {"case-handler": ("EpisodeOfCare.careManager | EpisodeOfCare.team",
                                       ("Practitioner", "PractitionerRole", "CareTeam"))},
    "Encounter": {"case-handler": ("Encounter.participant.individual", ("Practitioner", "PractitionerRole", "RelatedPerson"))},
    "CarePlan": {"case-handler": ("CarePlan.author | CarePlan.contributor | CarePlan.careTeam",
                                  ("Practitioner", "PractitionerRole", "Organization", "CareTeam", "Patient", "RelatedPerson", "Device"))},
    "Consent": {"provision-actor": (_PROVISION_ACTORS, ("Patient", "RelatedPerson", "Practitioner", "PractitionerRole",
                                                       "Organization", "CareTeam", "Device", "Group"))},
    "Binary": {"security-context": ("Binary.securityContext", ())},
}


@lru_cache(maxsize=None)
def for_type(res_type: str) -> tuple:
    """The server's own SearchParams (registry.SearchParam) of `res_type`."""
    from .registry import SearchParam

    return tuple(
        SearchParam(code=code, type="reference", url=f"{BASE}{res_type}-{code}",
                    description=f"{res_type}: {expr} (defined by this server)", expression=expr,
                    targets=targets, base=(res_type,))
        for code, (expr, targets) in _DEFINITIONS.get(res_type, {}).items())
