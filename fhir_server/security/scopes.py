"""SMART on FHIR scopes (App Launch 2.0, http://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

A clinical scope is `<context>/<type>.<permissions>[?<query>]`:

- context: `patient` (the token's patient compartment), `user` (what the user may see),
  `system` (a backend service, no user);
- type: a resource type or `*`;
- permissions: v1 `read` (= `rs`), `write` (= `cud`), `*` (= `cruds`), or v2 letters
  `c r u d s` in that order (any non-empty subsequence);
- query (v2 only): search parameters the resource must match, e.g.
  `patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory`.

Other scopes (`openid`, `fhirUser`, `launch/patient`, `offline_access`, ...) grant no data
access and parse to None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl

CONTEXTS = ("patient", "user", "system")
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE_RE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?$")
_V2_RE = re.compile(r"^c?r?u?d?s?$")

# The permission letter each FHIR interaction needs (SMART 2.0 §"Scopes for requesting clinical data").
INTERACTION_PERMISSION = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "search-type": "s",
    "search-system": "s",
    "search-compartment": "s",
    "history-type": "s",
    "history-system": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}


@dataclass(frozen=True)
class Scope:
    """One parsed clinical scope."""

    context: str  # patient | user | system
    res_type: str  # a resource type or "*"
    permissions: frozenset[str]  # subset of "cruds"
    params: tuple[tuple[str, str], ...]  # v2 granular restriction: search parameters the resource matches
    text: str

    def grants(self, res_type: str | None, permission: str) -> bool:
        """True when this scope allows `permission` on `res_type` (None: any type, i.e. `*`)."""
        if permission not in self.permissions:
            return False
        if res_type is None:
            return self.res_type == "*"
        return self.res_type in ("*", res_type)


@lru_cache(maxsize=4096)
def parse_scope(text: str) -> Scope | None:
    """A clinical scope, or None for any other scope (openid, launch, fhirUser, ...) or a malformed one."""
    m = _SCOPE_RE.match(text)
    if not m:
        return None
    context, res_type, perms, query = m.groups()
    if perms in V1_PERMISSIONS:
        if query is not None:  # granular restriction is a v2 feature
            return None
        letters = V1_PERMISSIONS[perms]
    elif _V2_RE.match(perms) and perms:
        letters = perms
    else:
        return None
    params: tuple[tuple[str, str], ...] = ()
    if query is not None:
        params = tuple(parse_qsl(query, keep_blank_values=False))
        if not params:
            return None
    return Scope(context, res_type, frozenset(letters), params, text)


def parse_scopes(text: str | None) -> tuple[Scope, ...]:
    """Every clinical scope in a space-separated scope string, in order."""
    if not text:
        return ()
    out = []
    for part in text.split():
        s = parse_scope(part)
        if s is not None:
            out.append(s)
    return tuple(out)


def is_known_scope(text: str) -> bool:
    """A scope this server understands: clinical, or one of the SMART/OIDC launch and identity scopes."""
    return parse_scope(text) is not None or text in NON_CLINICAL_SCOPES or text.startswith("launch/")


NON_CLINICAL_SCOPES = frozenset(("openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access"))


def narrow(requested: str, allowed: str) -> str:
    """The requested scopes a client may have: each requested scope that an allowed scope covers
    (same or wider context-type-permissions; a granular scope is covered by its plain form)."""
    allowed_scopes = parse_scopes(allowed)
    allowed_plain = set(allowed.split())
    out = []
    for text in requested.split():
        if text in allowed_plain:
            out.append(text)
            continue
        s = parse_scope(text)
        if s is None:
            continue
        for a in allowed_scopes:
            if a.context == s.context and a.res_type in ("*", s.res_type) and s.permissions <= a.permissions and not a.params:
                out.append(text)
                break
    return " ".join(dict.fromkeys(out))
