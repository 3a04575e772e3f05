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


# Transforms may change the resource being written (both parsed forms), e.g.
# moving a Binary's content to the blob store or filling an attachment's hash.
# fn(conn, ctx, res_type, res_id, parsed); they run before the rules.
WriteTransform = Callable[..., None]
_transforms: dict[str, WriteTransform] = {}


def register_transform(fn: WriteTransform, name: str | None = None) -> WriteTransform:
    """Install a write transform; registering again under the same name replaces it."""
    _transforms[name or fn.__name__] = fn
    return fn


def transform(conn: Connection, ctx, res_type: str, res_id: str | None, parsed) -> None:
    for fn in list(_transforms.values()):
        fn(conn, ctx, res_type, res_id, parsed)


def run(conn: Connection, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
    warnings: list[Issue] = []
    for rule in list(_rules.values()):
        warnings.extend(rule(conn, res_type, res_id, resource))
    return warnings
