"""Which FHIR interaction an HTTP request is, from its method and path alone.

The access log is written from the edge (`audit.middleware`), where the request line
is all there is: this module maps it onto the FHIR R4 RESTful interactions
(http://hl7.org/fhir/R4/http.html) and BALP's event kinds, without reading bodies.
`None` means the path is not audited (capabilities, discovery, health, docs, keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_ACTIONS = {"POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}
_CONDITIONAL = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_INSTANCE = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
LOGIN_PATHS = ("/auth/token", "/auth/authorize")


@dataclass(slots=True)
class Interaction:
    kind: str  # rest | login | export | hl7v2
    subtype: str  # restful-interaction code, or "$name" for operations, "login"
    action: str  # C R U D E
    data: list[tuple[str, str]] = field(default_factory=list)  # (type, id) named by the path
    is_search: bool = False  # the query string is the search (recorded as the Query entity)
    writes: bool = False  # a plain write: when it succeeds, its changes' events (written in its
    # transaction) say it all and no event of the request itself is added


def classify(method: str, path: str, base: str) -> Interaction | None:
    """The interaction of `method path` under the FHIR base path `base` (e.g. "/fhir")."""
    if path in LOGIN_PATHS:
        return Interaction("login", "login", "E") if method in ("POST", "GET") else None
    if path == "/hl7v2":
        return Interaction("hl7v2", "create", "C") if method == "POST" else None
    if path == base or path == base + "/":
        rest: list[str] = []
    elif path.startswith(base + "/"):
        rest = [s for s in path[len(base) + 1:].split("/")]
    else:
        return None
    if method in ("OPTIONS", "HEAD"):
        return None
    if not rest:
        if method == "GET":
            return Interaction("rest", "search-system", "E", is_search=True)
        return Interaction("rest", "transaction", "E", writes=True) if method == "POST" else None
    first = rest[0]
    if first in ("metadata", ".well-known") or not first:
        return None
    if first.startswith("$"):
        return _operation(method, first, [])
    if first == "_history":
        return Interaction("rest", "history-system", "E", is_search=True)
    res_type = first
    if len(rest) == 1:
        if method == "GET":
            return Interaction("rest", "search-type", "E", is_search=True)
        if method == "POST":
            return Interaction("rest", "create", "C", writes=True)
        if method in _CONDITIONAL:
            return Interaction("rest", _CONDITIONAL[method], _ACTIONS[method], writes=True)
        return None
    second = rest[1]
    if second.startswith("$"):
        return _operation(method, second, [])
    if second == "_search":
        return Interaction("rest", "search-type", "E", is_search=True)
    if second == "_history":
        return Interaction("rest", "history-type", "E", is_search=True)
    if len(rest) == 2:
        sub = _INSTANCE.get(method)
        if sub is None:
            return Interaction("rest", "operation", "E", data=[(res_type, second)])
        return Interaction("rest", sub, "R" if method == "GET" else _ACTIONS[method], data=[(res_type, second)], writes=method != "GET")
    third = rest[2]
    if third.startswith("$"):
        return _operation(method, third, [(res_type, second)])
    if third == "_history":
        if len(rest) >= 4:
            return Interaction("rest", "vread", "R", data=[(res_type, f"{second}/_history/{rest[3]}")])
        return Interaction("rest", "history-instance", "R", data=[(res_type, second)])
    # compartment search: Patient/123/Observation
    return Interaction("rest", "search-type", "E", data=[(res_type, second)], is_search=True)


def _operation(method: str, name: str, data: list[tuple[str, str]]) -> Interaction:
    kind = "export" if name == "$export" else "rest"
    return Interaction(kind, name, "E", data=data, is_search=True)  # always its own event, beside its writes' events
