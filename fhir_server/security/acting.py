"""Acting for another patient: the per-request layer and the Policy at the seam.

Whom a request acts for (docs/consent.md):
- the SMART `patient` context of the token (a portal's patient picker), or
- the header `X-Acting-For: Patient/<id>` (which then replaces the token's context).

When the logged-in person (the token's fhirUser, `Patient/...` or `RelatedPerson/...`)
is not that patient, `ActingFor` (an ASGI layer just inside the bearer-token layer)
resolves their `ActingGrant` from the database for this request only
(security.proxies.resolve) and puts a copy of the principal with `patient` and `acting`
set in the request state. Nothing is cached past the request: a revoked or expired
Consent, or a birthday, takes effect on the very next request.

An `X-Acting-For` the rules do not support is 403; a token whose patient context the
person may no longer act for is refused (403) at the seam by `ActingPolicy.check`.

`ActingPolicy.criteria` turns the grant into search criteria (no per-type code): a full
grant leaves the scopes' compartment as it is (minus denied cases); a case-limited one
allows the case resource (`_id`), the resources tied to it (the search parameters in
mappings/consent/proxy_policy.yaml `case_links`) and the Patient resource itself.
"""

from __future__ import annotations

import dataclasses
import re

import orjson
from starlette.concurrency import run_in_threadpool

from ..errors import FhirError, Issue, operation_outcome
from .authz import AccessRequest, Criteria, Principal, Visibility
from .proxies import ActingGrant
from .proxy_policy import policy

HEADER = b"x-acting-for"
_REF = re.compile(r"^(?:Patient/)?([A-Za-z0-9\-.]{1,64})$")

_ACTION_OF = {
    "read": "read", "vread": "read", "search-type": "read", "search-system": "read", "search-compartment": "read",
    "history-instance": "read", "history-type": "read", "history-system": "read",
    "create": "create", "update": "update", "patch": "update", "delete": "delete",
}


def action_of(request: AccessRequest) -> str:
    """The consent action class (read | create | update | delete) of an interaction."""
    if request.interaction.startswith("operation:"):
        return "update" if request.operation_access == "write" else "read"
    return _ACTION_OF.get(request.interaction, "read")


def person_of(principal: Principal) -> str | None:
    """The logged-in person as a reference, when the token names one that may act for others."""
    user = principal.fhir_user or ""
    if user.startswith(("Patient/", "RelatedPerson/")) and "/" in user and user.split("/", 1)[1]:
        return user
    return None


class ActingPolicy:
    """The acting-for rules at the authorisation seam (installed by security.setup)."""

    def check(self, principal: Principal, request: AccessRequest) -> str | None:
        grant = principal.acting
        if not isinstance(grant, ActingGrant):
            return None
        if not grant.allowed:
            return (f"{grant.actor} may not act for Patient/{grant.patient}: no guardian relationship under the "
                    "self-service age and no Consent in force names them (or a Consent denies it)")
        action = action_of(request)
        if not grant.allows_action(policy().actions.get(action, frozenset())):
            return f"The Consent under which {grant.actor} acts for Patient/{grant.patient} does not allow '{action}'"
        return None

    def criteria(self, principal: Principal, res_type: str, permission: str) -> Visibility:
        grant = principal.acting
        if not isinstance(grant, ActingGrant):
            return None
        return grant_criteria(grant, res_type)


def _links(ref: str, res_type: str) -> list[tuple[str, str]]:
    """The (search parameter, value) pairs that tie a resource of `res_type` to `ref`."""
    ref_type, _, ref_id = ref.partition("/")
    out = [("_id", ref_id)] if res_type == ref_type else []
    return out + [(p, ref) for p in policy().case_links.get(res_type, ())]


def grant_criteria(grant: ActingGrant, res_type: str) -> Visibility:
    """The criteria under which `res_type` resources are visible under `grant` (AND-ed with the scopes')."""
    if not grant.allowed:
        return []
    exclude = tuple(pair for ref in sorted(grant.denied) for pair in _links(ref, res_type))
    if grant.full:
        return [Criteria(exclude=exclude)] if exclude else None
    alts: list[Criteria] = []
    if res_type == "Patient":
        alts.append(Criteria(params=(("_id", grant.patient),)))
    for ref in sorted(grant.items):
        if ref in grant.denied:
            continue
        pairs = _links(ref, res_type)
        if ref in grant.instance_only:
            pairs = pairs[:1] if pairs and pairs[0][0] == "_id" else []
        alts.extend(Criteria(params=(pair,), exclude=exclude) for pair in pairs)
    return alts


def _header(scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1").strip()
    return None


async def _refuse(send, status: int, code: str, message: str) -> None:
    body = orjson.dumps(operation_outcome([Issue("error", code, message)]))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/fhir+json; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ActingFor:
    """ASGI layer: resolve whom the request acts for (see the module docstring)."""

    def __init__(self, app, db) -> None:
        self.app = app
        self.db = db

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.get("state") or {}
        principal = state.get("principal")
        header = _header(scope, HEADER)
        if not isinstance(principal, Principal) or principal.unrestricted or not principal.authenticated:
            return await self.app(scope, receive, send)
        target = principal.patient
        person = person_of(principal)
        if header:
            m = _REF.match(header)
            if not m:
                return await _refuse(send, 400, "invalid", "X-Acting-For must be 'Patient/<id>'")
            if person is None:
                return await _refuse(send, 403, "forbidden", "X-Acting-For needs a token naming the logged-in person (fhirUser Patient/... or RelatedPerson/...)")
            target = m.group(1)
        if not target or person is None or person == f"Patient/{target}":
            return await self.app(scope, receive, send)
        try:
            grant = await run_in_threadpool(self.db.run_read, _resolve, person, target)
        except FhirError as exc:
            return await _refuse(send, exc.status, exc.issues[0].code if exc.issues else "transient", exc.issues[0].diagnostics if exc.issues else "unavailable")
        if header and not grant.allowed:
            return await _refuse(send, 403, "forbidden", f"{person} may not act for Patient/{target}")
        state["principal"] = dataclasses.replace(principal, patient=target, acting=grant)
        return await self.app(scope, receive, send)


def _resolve(conn, person: str, target: str) -> ActingGrant:
    from .. import clock
    from .proxies import resolve

    return resolve(conn, person, target, clock.now())
