"""Access criteria (from the policy at the seam) compiled into SQL conditions.

The policy answers "which resources of type T may this caller see" with a list of
`security.authz.Criteria` (OR-ed; each a compartment AND search parameters) or None
(all). Here they become conditions over a `resources` alias, added to the query like any
other search criterion: paging, totals and includes then never count or reveal a
hidden resource (DESIGN.md: access is a search criterion, not a filter afterwards).
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection, ColumnElement, and_, false, not_, or_, select, true
from sqlalchemy.sql import FromClause

from ..errors import FhirError
from ..security.authz import Visibility
from ..storage.schema import resources

# (res_type, permission "r" | "s") -> Visibility
Access = Callable[[str, str], Visibility]


def _case_consent(name: str, res_type: str, r: FromClause) -> ColumnElement:
    from .case_access import case_consent_condition, staff_of

    return case_consent_condition(res_type, r, staff_of(name))


# Criteria.conditions: rules compiled here rather than from search parameters. A name is
# "<rule>" or "<rule>:<argument>" ("case-consent:Practitioner/9": the rule for that staff member).
NAMED_CONDITIONS: dict[str, Callable[[str, str, FromClause], ColumnElement]] = {"case-consent": _case_consent}


def named_condition(name: str, res_type: str, r: FromClause) -> ColumnElement:
    """The SQL of the named rule `name` (see NAMED_CONDITIONS) on alias `r` of `res_type`."""
    return NAMED_CONDITIONS[name.partition(":")[0]](name, res_type, r)


def criteria_condition(res_type: str, vis: Visibility, r: FromClause, base_url: str = "") -> ColumnElement | None:
    """The SQL condition for a Visibility on alias `r` of type `res_type` (None: no restriction)."""
    from .query import QueryContext, compartment_condition, param_condition

    if vis is None:
        return None
    alts = []
    for c in vis:
        parts = []
        try:
            if c.compartment:
                parts.append(compartment_condition(c.compartment[0], c.compartment[1], res_type, r))
            for name, value in c.params:
                parts.append(param_condition(QueryContext(base_url), res_type, name, value, r))
        except FhirError:
            continue  # a granular scope whose parameter does not apply to this type grants nothing here
        for name, value in c.exclude:
            try:
                parts.append(not_(param_condition(QueryContext(base_url), res_type, name, value, r)))
            except FhirError:
                continue  # an exclusion that cannot apply to this type excludes nothing
        parts.extend(named_condition(name, res_type, r) for name in c.conditions)
        alts.append(and_(*parts) if parts else true())
    return or_(*alts) if alts else false()


def type_condition(access: Access | None, res_type: str, permission: str, r: FromClause, base_url: str = "") -> ColumnElement | None:
    """The access condition for `res_type` (None when unrestricted)."""
    if access is None:
        return None
    return criteria_condition(res_type, access(res_type, permission), r, base_url)


def system_condition(access: Access | None, types: list[str], r: FromClause, base_url: str = "") -> ColumnElement | None:
    """For a search across types: OR over each type of (type AND its condition)."""
    if access is None:
        return None
    alts = []
    unrestricted = True
    for t in types:
        vis = access(t, "s")
        if vis is None:
            alts.append(r.c.res_type == t)
            continue
        unrestricted = False
        if not vis:
            continue
        alts.append(and_(r.c.res_type == t, criteria_condition(t, vis, r, base_url)))
    if unrestricted:
        return None
    return or_(*alts) if alts else false()


def visible(conn: Connection, res_type: str, res_id: str, vis: Visibility) -> bool:
    """Whether the live resource (res_type, res_id) satisfies the criteria (True when vis is None)."""
    if vis is None:
        return True
    if not vis:
        return False
    from ..storage.repository import flush
    from .query import live

    flush(conn)
    r = resources
    cond = criteria_condition(res_type, vis, r)
    row = conn.execute(select(r.c.pk).where(r.c.res_type == res_type, r.c.res_id == res_id, live(r), cond).limit(1)).first()
    return row is not None


# ---------------------------------------------------------------- criteria a search implies

_PATIENT_ONLY = ".where(resolve() is Patient)"


def _implying_params(res_type: str) -> dict[str, bool]:
    """The type's reference parameters whose match on `:Patient=<id>` places a resource in that
    Patient's compartment: code -> whether a bare `<id>` does too. A compartment parameter itself
    needs the modifier (`subject=1` also matches `Group/1`); a parameter whose expression is a
    compartment parameter's `.where(resolve() is Patient)` (Observation `patient`: subject) is
    indexed for Patient references only, so its bare id suffices. `Patient/<id>` never counts: it
    also matches a reference stored as the absolute URL alone, which the compartment does not."""
    from . import registry

    params = registry.search_parameters_for(res_type)
    cached = _IMPLYING.get(res_type)
    if cached is not None and cached[0] is params:  # recomputed when custom parameters change
        return cached[1]
    from .query import lookup_param

    found: dict[str, bool] = {}
    paths = set()
    for code in registry.patient_compartment().get(res_type, ()):
        sp = lookup_param(res_type, code)
        if sp is not None and sp.type == "reference":
            found[code] = False
            paths.add(sp.expression)
    for code, sp in params.items():
        expr = sp.expression or ""
        if sp.type == "reference" and not sp.pending and expr.endswith(_PATIENT_ONLY) and expr[: -len(_PATIENT_ONLY)] in paths:
            found.setdefault(code, True)
    _IMPLYING[res_type] = (params, found)
    return found


_IMPLYING: dict[str, tuple[dict, dict[str, bool]]] = {}  # res_type -> (the parameters they come from, the map)


def implied_by_search(res_type: str | None, vis: Visibility, params) -> bool:
    """Whether the caller's visibility is one bare Patient compartment that a search parameter
    already confines every match to (`Observation?patient=<own id>` with a patient token): its
    condition, a second pass over the reference index, can then be left out of the SQL with
    the same result. Only a bare id counts (no OR list, chain, modifier but `:Patient`, escape,
    typed or absolute reference); tests/search/test_implied_compartment.py holds the answers to
    those of the search with the condition in place."""
    if res_type is None or not vis or len(vis) != 1:
        return False
    c = vis[0]
    if c.params or c.exclude or c.conditions or not c.compartment or c.compartment[0] != "Patient":
        return False
    pid = c.compartment[1]
    implying = _implying_params(res_type)
    for name, value in params:
        code, _, modifier = name.partition(":")
        bare_ok = implying.get(code)
        if bare_ok is None or modifier not in ("", "Patient") or "," in value or "\\" in value:
            continue
        if value == pid and (bare_ok or modifier == "Patient"):
            return True
    return False
