"""Write rules: business checks every create/update passes before it is stored.

A rule sees the connection of the write (so it can look for duplicates), and
either raises FhirError (422/409: nothing is written) or returns warnings.
National-identifier validation and identity uniqueness are rules; consent and
booking rules will be too.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection

from ..errors import Issue

WriteRule = Callable[[Connection, str, str | None, dict], list[Issue]]
_rules: dict[str, WriteRule] = {}


def register(rule: WriteRule, name: str | None = None) -> WriteRule:
    """Install a rule; a rule registered again under the same name replaces it."""
    _rules[name or rule.__name__] = rule
    return rule


def run(conn: Connection, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
    warnings: list[Issue] = []
    for rule in list(_rules.values()):
        warnings.extend(rule(conn, res_type, res_id, resource))
    return warnings


def collect(conn: Connection, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
    """Every rule's verdict, none stopping the others (for $validate): a rule that
    refuses contributes its FhirError's issues, one that accepts its warnings."""
    from ..errors import FhirError

    issues: list[Issue] = []
    for rule in list(_rules.values()):
        try:
            issues.extend(rule(conn, res_type, res_id, resource))
        except FhirError as exc:
            issues.extend(exc.issues)
    return issues

# Preparers may change the resource before it is stored (both parsed copies),
# e.g. a Subscription's status set to active and its header secrets masked.
# They see the request context, so they can record who made the change.
Preparer = Callable[[Connection, object, str | None, object], None]
_preparers: dict[str, dict[str, Preparer]] = {}


def register_preparer(res_type: str, fn: Preparer, name: str | None = None) -> Preparer:
    """`fn(conn, ctx, res_id, parsed)` runs before the rules on every write of `res_type`."""
    _preparers.setdefault(res_type, {})[name or fn.__name__] = fn
    return fn


def prepare(conn: Connection, ctx, res_type: str, res_id: str | None, parsed) -> None:
    for fn in list(_preparers.get(res_type, {}).values()):
        fn(conn, ctx, res_id, parsed)
