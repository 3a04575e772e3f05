"""The authorisation seam every interaction passes through.

Today the default policy allows everything. SMART scopes, consent and proxy
rules (guardians, powers of attorney, per-country ages) plug in here as
Policy objects, without touching the REST layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..errors import FhirError


@dataclass
class Principal:
    """Who is calling; `anonymous` until authentication lands."""

    subject: str = "anonymous"
    scopes: frozenset[str] = frozenset()
    claims: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AccessRequest:
    interaction: str  # read, vread, create, update, patch, delete, search-type, search-system, history-*, operation
    res_type: str | None = None
    res_id: str | None = None
    resource: dict | None = None  # the resource being written, where there is one


class Policy(Protocol):
    def check(self, principal: Principal, request: AccessRequest) -> str | None:
        """Return None to allow, or a reason to refuse."""


class AllowAll:
    def check(self, principal: Principal, request: AccessRequest) -> str | None:
        return None


_policies: list[Policy] = [AllowAll()]


def set_policies(policies: list[Policy]) -> None:
    _policies[:] = policies


def authorize(principal: Principal, request: AccessRequest) -> None:
    """Raise 403 if any installed policy refuses the request."""
    for policy in _policies:
        reason = policy.check(principal, request)
        if reason:
            raise FhirError.of(403, "forbidden", reason)
