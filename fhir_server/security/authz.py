"""The authorisation seam every interaction passes through.

Two questions, asked by every interaction:

- `authorize(principal, request)`: may this principal attempt this interaction at all?
  SMART scopes decide first (`security.smart`), then every installed Policy (consent,
  guardian and proxy rules plug in here). A refusal is a 403 OperationOutcome naming
  what was missing; an unauthenticated principal is a 401.
- `visibility(principal, res_type, permission)`: which resources of a type may it see?
  The answer is data (a list of `Criteria`, OR-ed), which the search engine compiles
  into SQL conditions, so searches, includes, reads by id, history and conditional
  writes are filtered in the query, never afterwards. `None` means "all of them".

A later policy adds per-request conditions by implementing `criteria()`; its criteria
are AND-ed with the scopes' (it can narrow, never widen).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..errors import FhirError


@dataclass
class Principal:
    """Who is calling.

    `unrestricted` principals are the server's own in-process callers (the loader,
    HL7 v2 inbound, jobs) and every request when protection is off
    (`FHIR_SERVER_AUTH=off`). Everything arriving over HTTP with protection on is a
    token's principal: scopes plus SMART context (`patient`, `fhirUser`). A principal
    built in-process is authenticated (its scopes decide); only the HTTP edge's
    ANONYMOUS (no verified token) is not, and gets 401 at the seam."""

    subject: str = "anonymous"
    scopes: frozenset[str] = frozenset()
    claims: dict = field(default_factory=dict)
    client_id: str | None = None
    issuer: str | None = None
    patient: str | None = None  # SMART launch context: the Patient id the token is bound to
    fhir_user: str | None = None  # SMART fhirUser: "Patient/123", "Practitioner/9", ...
    authenticated: bool = True
    unrestricted: bool = False
    expires_at: float | None = None  # epoch seconds (the token's exp)
    # per request, set by security.acting when the logged-in person acts for another patient
    # (`patient` is then that patient): a security.proxies.ActingGrant. Never cached.
    acting: object | None = None

    @classmethod
    def internal(cls, subject: str = "internal") -> "Principal":
        return cls(subject=subject, authenticated=True, unrestricted=True)


ANONYMOUS = Principal(authenticated=False)


@dataclass(frozen=True)
class AccessRequest:
    interaction: str  # read, vread, create, update, patch, delete, search-type, search-system, history-*, operation:<name>, hl7v2
    res_type: str | None = None
    res_id: str | None = None
    resource: dict | None = None  # the resource being written, where there is one
    operation_access: str | None = None  # for operations: read | write | system (from its registration)


@dataclass(frozen=True)
class Criteria:
    """One way a resource may be visible: inside `compartment` (("Patient", id)) AND
    matching every search parameter in `params` and none in `exclude` (each excluded
    parameter is a NOT) AND every named rule in `conditions` (rules the search layer
    compiles itself, search.access.NAMED_CONDITIONS: "case-consent"). A list of
    Criteria is OR-ed."""

    compartment: tuple[str, str] | None = None
    params: tuple[tuple[str, str], ...] = ()
    exclude: tuple[tuple[str, str], ...] = ()
    conditions: tuple[str, ...] = ()


Visibility = list[Criteria] | None  # None: everything; []: nothing


class Policy(Protocol):
    def check(self, principal: Principal, request: AccessRequest) -> str | None:
        """Return None to allow, or a reason to refuse."""


class AllowAll:
    def check(self, principal: Principal, request: AccessRequest) -> str | None:
        return None


_policies: list[Policy] = [AllowAll()]


class _Acting:
    """The acting-for rules (guardians, Consent proxies: security.acting), always on, like
    the scopes; imported lazily (security.acting imports this module)."""

    def check(self, principal: Principal, request: AccessRequest) -> str | None:
        if principal.acting is None or request.operation_access == "authenticated":
            return None  # operations open to any token check the rest themselves
        return _lazy().ActingPolicy().check(principal, request)

    def criteria(self, principal: Principal, res_type: str, permission: str) -> "Visibility":
        if principal.acting is None:
            return None
        return _lazy().ActingPolicy().criteria(principal, res_type, permission)


_ACTING = _Acting()


class _Modules:
    """The policy modules that import this one (security.smart, .acting, .case_consent),
    imported on first use; a function-level import on every call cost microseconds per
    request at the seam."""

    def __init__(self) -> None:
        from . import smart
        from .acting import ActingPolicy
        from .case_consent import staff_criteria

        self.smart = smart
        self.ActingPolicy = ActingPolicy
        self.staff_criteria = staff_criteria


_modules: _Modules | None = None


def _lazy() -> _Modules:
    global _modules
    if _modules is None:
        _modules = _Modules()
    return _modules


class _CaseConsent:
    """Per-case consent for a case's documents (security.case_consent), always on: staff
    see a DocumentReference of a case only while the patient's case consent is in force."""

    def criteria(self, principal: Principal, res_type: str, permission: str) -> "Visibility":
        return _lazy().staff_criteria(principal, res_type)


_CASE_CONSENT = _CaseConsent()


def set_policies(policies: list[Policy]) -> None:
    """Install the additional policies (after SMART scopes, which always apply)."""
    _policies[:] = policies


def unauthenticated(message: str = "This request needs a bearer token") -> FhirError:
    return FhirError.of(401, "login", message)


def authorize(principal: Principal, request: AccessRequest) -> None:
    """Raise 401 for an unauthenticated principal, 403 if the scopes or a policy refuse."""
    if not principal.authenticated:
        raise unauthenticated()
    reason = _lazy().smart.check(principal, request) or _ACTING.check(principal, request)
    if reason:
        raise FhirError.of(403, "forbidden", reason)
    for policy in _policies:
        reason = policy.check(principal, request)
        if reason:
            raise FhirError.of(403, "forbidden", reason)


def visibility(principal: Principal, res_type: str, permission: str = "s") -> Visibility:
    """Which resources of `res_type` the principal may see (`permission` r or s)."""
    vis = _lazy().smart.visibility(principal, res_type, permission)
    for policy in (_ACTING, _CASE_CONSENT, *_policies):
        extra = getattr(policy, "criteria", None)
        if extra is None:
            continue
        more = extra(principal, res_type, permission)
        if more is None:
            continue
        vis = more if vis is None else [Criteria(a.compartment or b.compartment, a.params + b.params, a.exclude + b.exclude,
                                                 a.conditions + b.conditions)
                                        for a in vis for b in more
                                        if not (a.compartment and b.compartment and a.compartment != b.compartment)]
    return vis
