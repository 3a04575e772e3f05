"""Which resource each entry of a transaction writes, decided before anything is written.

http://hl7.org/fhir/R4/http.html#transaction: the entries of a transaction are
processed as if at one instant, so two entries may not act on the same resource
("the same resource SHALL NOT be the subject of more than one entry"): two PUTs
to `Patient/x`, a PUT and a DELETE of it, a conditional update whose match
another entry writes. `plan_targets` resolves every write entry to the
`(type, id)` it will write (conditional forms through their search), refuses a
transaction in which two entries meet on one resource (400, naming both), and
assigns the ids of created resources so that `fullUrl`s can be rewritten.

`lock_criteria` and `lock_targets` take the writers' locks in one canonical order:
the conditional-create criteria first, then every target resource. Two
transactions writing Patients A and B in opposite orders would otherwise each
hold one row and wait for the other (PostgreSQL: DeadlockDetected).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from ..errors import FhirError
from ..storage import repository as repo
from . import interactions as ix

if TYPE_CHECKING:
    from .bundles import EntryRequest


@dataclass
class TargetPlan:
    mapping: dict[str, str] = field(default_factory=dict)  # fullUrl -> "Type/id"
    assigned: dict[int, str] = field(default_factory=dict)  # entry index -> server-assigned id (POST)
    targets: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, id) -> entry index that writes it


def criteria_keys(entries: list["EntryRequest"]) -> list[tuple[str, str]]:
    """(type, normalised criteria) of every conditional create / conditional update."""
    keys = set()
    for e in entries:
        if not e.res_type:
            continue
        if e.method == "POST" and e.request.get("ifNoneExist"):
            keys.add((e.res_type, ix._criteria_key(str(e.request["ifNoneExist"]))))
        elif e.method == "PUT" and not e.res_id and e.query:
            keys.add((e.res_type, ix._criteria_key(e.query)))
    return sorted(keys)


def lock_criteria(conn: Connection, entries: list["EntryRequest"]) -> None:
    """Serialise on the conditional criteria (the keys conditional create takes), in
    canonical order, before any search."""
    repo.lock_keys(conn, [("conditional-create", t, key) for t, key in criteria_keys(entries)])


def lock_targets(conn: Connection, plan: TargetPlan) -> None:
    """Serialise on every existing or client-named resource the transaction writes, in
    canonical order (resources created under a fresh server id need no lock)."""
    repo.lock_keys(conn, [("resource", t, i) for (t, i), index in plan.targets.items()
                          if t != "criteria" and plan.assigned.get(index) != i])


class SameResourceTwice(FhirError):
    """400: two entries of one transaction act on one resource (both are named)."""


def _claim(plan: TargetPlan, key: tuple[str, str], index: int, what: dict[int, str]) -> None:
    other = plan.targets.get(key)
    if other is not None and other != index:
        first, second = sorted((other, index))
        raise SameResourceTwice.of(
            400,
            "invalid",
            f"Bundle.entry[{first}] ({what[first]}) and Bundle.entry[{second}] ({what[second]}) both act on "
            f"{key[0]}/{key[1]}; a transaction may act on a resource only once",
            [f"Bundle.entry[{first}]", f"Bundle.entry[{second}]"],
        )
    plan.targets[key] = index


def plan_targets(conn: Connection, entries: list["EntryRequest"], ctx) -> TargetPlan:
    """Resolve every write entry to the resource it writes; 400 when two entries share one."""
    plan = TargetPlan()
    what = {e.index: f"{e.method} {e.request.get('url')}" for e in entries}
    criteria_owner: dict[tuple[str, str], int] = {}
    for e in entries:
        if not e.res_type or e.operation or e.method in ("GET", "HEAD"):
            continue
        try:
            _plan_entry(conn, plan, e, what, criteria_owner, ctx)
        except SameResourceTwice:
            raise
        except FhirError as exc:
            from .bundles import _entry_error

            raise _entry_error(e.index, exc) from None
    return plan


def _plan_entry(conn: Connection, plan: TargetPlan, e: "EntryRequest", what: dict[int, str],
                criteria_owner: dict[tuple[str, str], int], ctx) -> None:
    """Resolve one write entry (see plan_targets)."""
    t = e.res_type
    ix.check_type(t)
    target: str | None = None
    if e.method == "POST":
        if e.request.get("ifNoneExist"):
            crit = (t, ix._criteria_key(str(e.request["ifNoneExist"])))
            if crit in criteria_owner:
                _claim(plan, ("criteria", f"{t}?{crit[1]}"), criteria_owner[crit], what)
                _claim(plan, ("criteria", f"{t}?{crit[1]}"), e.index, what)
            criteria_owner[crit] = e.index
            matches = ix._find(conn, ctx, t, e.request["ifNoneExist"])
            if len(matches) == 1:
                target = matches[0][1]
                _claim(plan, (t, target), e.index, what)
        if target is None:
            target = plan.assigned[e.index] = str(uuid.uuid4())
    elif e.method in ("PUT", "PATCH", "DELETE") and e.res_id:
        ix.check_id(e.res_id)
        target = e.res_id
        _claim(plan, (t, target), e.index, what)
    elif e.query:
        matches = ix._find(conn, ctx, t, e.query, limit=2 if e.method != "DELETE" else 100)
        if e.method == "PUT":
            crit = (t, ix._criteria_key(e.query))
            if crit in criteria_owner:
                _claim(plan, ("criteria", f"{t}?{crit[1]}"), criteria_owner[crit], what)
                _claim(plan, ("criteria", f"{t}?{crit[1]}"), e.index, what)
            criteria_owner[crit] = e.index
        if len(matches) == 1 or (e.method == "DELETE" and matches):
            for _pk, mid in matches:
                _claim(plan, (t, mid), e.index, what)
            target = matches[0][1] if len(matches) == 1 else None
        elif not matches and e.method == "PUT":
            body_id = e.resource.get("id") if isinstance(e.resource, dict) else None
            target = str(body_id) if body_id else str(uuid.uuid4())
            if isinstance(e.resource, dict):
                e.resource["id"] = target
            _claim(plan, (t, target), e.index, what)
    if target and e.full_url and e.method in ("POST", "PUT"):
        plan.mapping[e.full_url] = f"{t}/{target}"
        if e.full_url.startswith(("http://", "https://")):
            # an absolute fullUrl on our own base is also referenced relatively
            tail = "/".join(e.full_url.rstrip("/").split("/")[-2:])
            plan.mapping.setdefault(tail, f"{t}/{target}")


__all__ = ["TargetPlan", "plan_targets", "lock_criteria", "lock_targets", "criteria_keys"]
