"""Write rule: an element bound (required) to an ordered code system holds one of its codes.

Narrow on purpose: the queue cannot rank `Task.priority = whenever`, so such
a write is refused with 422 (code-invalid) and nothing is stored. The elements
are those of terminology/ordered-codes.json (request-priority on Task,
ServiceRequest, Communication, ...). The generic required-binding check of the
terminology work covers this too; this rule can then go.
"""

from __future__ import annotations

from sqlalchemy import Connection

from ...errors import FhirError, Issue
from ...search.ordered import _data, codes_of


def _values(node, steps: list[str], path: str):
    if not steps:
        yield path, node
        return
    child = node.get(steps[0]) if isinstance(node, dict) else None
    if isinstance(child, list):
        for i, c in enumerate(child):
            yield from _values(c, steps[1:], f"{path}.{steps[0]}[{i}]")
    elif child is not None:
        yield from _values(child, steps[1:], f"{path}.{steps[0]}")


def ordered_code_rule(conn: Connection, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
    issues = []
    for element, system in (_data().get("elements") or {}).items():
        steps = element.split(".")
        if steps[0] != res_type:
            continue
        allowed = codes_of(system)
        for path, value in _values(resource, steps[1:], res_type):
            if value not in allowed:
                issues.append(Issue("error", "code-invalid", f"{path} '{value}' is not a code of {system} ({', '.join(allowed)})", [path]))
    if issues:
        raise FhirError(422, issues)
    return []
