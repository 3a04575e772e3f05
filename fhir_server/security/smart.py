"""SMART scopes as the first policy at the seam: what a token may attempt, and what it may see.

- `patient/` scopes reach the Patient compartment of the token's `patient` (R4
  CompartmentDefinition/patient, as shipped in resources/); no `patient` context, no access.
- `user/` scopes reach what the user may see: a user who is a Patient (fhirUser
  Patient/x) sees that patient's compartment; staff (fhirUser Practitioner or
  PractitionerRole) see the type as a whole, narrowed by later policies (issue 13:
  care relationships, guardians, proxies). A user/ scope without a `fhirUser` grants
  NOTHING: SMART App Launch 2.0 bounds user/ scopes by the user's own access, and a
  token that does not say who the user is cannot be bounded (docs/security.md).
- `system/` scopes reach every resource of the type (backend services).
- v2 granular scopes (`?param=value`) add their search parameters to what is visible.
"""

from __future__ import annotations

from functools import lru_cache

from .authz import AccessRequest, Criteria, Principal, Visibility
from .scopes import INTERACTION_PERMISSION, Scope, parse_scopes

_WORDS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def _scopes(principal: Principal) -> tuple[Scope, ...]:
    return _parsed(principal.scopes)


@lru_cache(maxsize=4096)
def _parsed(scopes: frozenset[str]) -> tuple[Scope, ...]:
    """A token's scopes parsed once (every request of the token asks several times)."""
    return parse_scopes(" ".join(sorted(scopes)))


def _usable(principal: Principal, s: Scope) -> bool:
    """A patient/ scope needs the patient context; a user/ scope needs a user."""
    if s.context == "patient":
        return bool(principal.patient)
    if s.context == "user":
        return bool(principal.fhir_user)
    return True


def _unbounded_user(principal: Principal) -> bool:
    return not principal.fhir_user and any(s.context == "user" for s in _scopes(principal))


def _has(principal: Principal, res_type: str | None, letters: str, contexts: tuple[str, ...] = ("patient", "user", "system"), any_type: bool = False) -> bool:
    for s in _scopes(principal):
        if s.context not in contexts or not _usable(principal, s):
            continue
        for p in letters:
            if any_type and p in s.permissions:
                return True
            if s.grants(res_type, p):
                return True
    return False


def _needed(res_type: str | None, letters: str, contexts: tuple[str, ...] = ("patient", "user", "system")) -> str:
    t = res_type or "*"
    return " or ".join(f"{c}/{t}.{p}" for c in contexts for p in letters)


def check(principal: Principal, request: AccessRequest) -> str | None:
    """None to allow, or the reason (naming the missing scope) to refuse with 403."""
    if principal.unrestricted:
        return None
    interaction = request.interaction
    rt = request.res_type
    if interaction in INTERACTION_PERMISSION:
        p = INTERACTION_PERMISSION[interaction]
        if interaction == "search-system" or (interaction == "history-system"):
            ok = _has(principal, None, p, any_type=True)
        else:
            ok = _has(principal, rt, p)
        if ok:
            return None
        return f"The token does not allow {interaction} of {rt or 'all types'}: a scope {_needed(rt, p)} is missing" + _hint(principal)
    if interaction == "hl7v2":
        if _has(principal, None, "cu", ("system",), any_type=True):
            return None
        return "HL7 v2 messages need a system scope that allows writes (e.g. system/*.cu or system/*.write)"
    if interaction.startswith("operation:"):
        name = interaction.split(":", 1)[1]
        access = request.operation_access or "read"
        if access == "authenticated":
            return None
        if access == "system":
            if _has(principal, rt, "rs", ("system",), any_type=rt is None):
                return None
            return f"${name} needs a system/ scope (backend services): {_needed(rt, 'rs', ('system',))} is missing"
        if access == "write":
            letters = "cu"
        else:
            letters = "r" if request.res_id else "s"
        if rt is None:
            ok = _has(principal, None, letters, any_type=True)
        else:
            ok = _has(principal, rt, letters)
        if ok:
            return None
        return f"${name} on {rt or 'the system'} needs a scope {_needed(rt, letters)}, which the token lacks" + _hint(principal)
    return f"Interaction '{interaction}' is not covered by any scope"


def _hint(principal: Principal) -> str:
    if _unbounded_user(principal):
        return " (its user/ scopes grant nothing: the token names no fhirUser, so the user's access is unknown)"
    return ""


def visibility(principal: Principal, res_type: str, permission: str = "s") -> Visibility:
    """The criteria under which resources of `res_type` are visible to the scopes (OR-ed)."""
    if principal.unrestricted:
        return None
    alts: list[Criteria] = []
    for s in _scopes(principal):
        if not s.grants(res_type, permission) or not _usable(principal, s):
            continue
        compartment = None
        if s.context == "patient":
            compartment = ("Patient", principal.patient)
        elif s.context == "user":
            user = principal.fhir_user or ""
            if principal.acting is not None and principal.patient:
                compartment = ("Patient", principal.patient)  # acting for another patient (security.acting checked it)
            elif user.startswith("Patient/"):
                compartment = ("Patient", user.split("/", 1)[1])
            elif user.startswith("RelatedPerson/"):
                continue  # a related person sees only the patients they act for (X-Acting-For / patient context)
        if compartment is None and not s.params:
            return None  # one unrestricted grant: everything of the type
        alts.append(Criteria(compartment, s.params))
    return alts
