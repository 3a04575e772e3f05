"""Registry of $operations: each lives in a module of its own and registers here.

An operation handler receives an OperationCall and returns an Outcome (or a
ready HTTP Response for streaming operations such as export downloads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import FhirError
from ..security.authz import AccessRequest, authorize
from .capabilities import register_operation
from .context import RequestContext
from .interactions import check_visible


@dataclass
class OperationCall:
    name: str  # without the $
    method: str  # GET | POST | DELETE
    ctx: RequestContext
    db: Any  # fhir_server.storage.database.Database
    settings: Any
    res_type: str | None = None
    res_id: str | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def body_parameters(call: OperationCall) -> list[tuple[str, str]]:
    """(name, value) pairs of a POSTed Parameters body: primitive values as
    text, a Reference as its reference string. Empty for GET."""
    if call.method != "POST" or not call.body.strip():
        return []
    from ..model import jsonio

    doc = jsonio.parse_plain(call.body)
    if not isinstance(doc, dict) or doc.get("resourceType") != "Parameters":
        raise FhirError.of(400, "structure", f"A POSTed ${call.name} takes a Parameters resource")
    out: list[tuple[str, str]] = []
    for p in doc.get("parameter") or []:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise FhirError.of(400, "structure", "Each Parameters.parameter needs a name")
        values = [v for k, v in p.items() if k.startswith("value")]
        if len(values) != 1:
            raise FhirError.of(400, "structure", f"Parameter '{p['name']}' needs exactly one value[x]")
        value = values[0]
        if isinstance(value, dict):  # Reference
            value = value.get("reference")
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int)):
            raise FhirError.of(400, "invalid", f"Parameter '{p['name']}' has an unsupported value type")
        out.append((p["name"], str(value)))
    return out


Handler = Callable[[OperationCall], Any]
# (name, level) -> handler; level is "system", "type" or "instance".
_handlers: dict[tuple[str, str], tuple[Handler, tuple[str, ...] | None]] = {}
# (name, level) -> what the SMART seam asks of the caller (see security.smart.check).
_access: dict[tuple[str, str], str] = {}
ACCESS_KINDS = ("read", "write", "system", "authenticated")


def operation(
    name: str,
    levels: tuple[str, ...],
    types: tuple[str, ...] | None = None,
    definition: str | None = None,
    advertise: bool = True,
    access: str = "read",
):
    """Decorator: register `fn` as $name at the given levels (and types).

    `advertise=False` is for protocol endpoints (polling, downloads) that are
    reached by URL from a response, not operations a client calls by name.

    `access` is what the authorisation seam asks of the caller before the handler
    runs: "read" (default: a read scope on the instance's type, a search scope on the
    type, or on `*` at system level), "write" (create/update on the type), "system"
    (a system/ scope: backend services) or "authenticated" (any valid token; the
    handler checks the rest, e.g. that an export belongs to the caller)."""
    if access not in ACCESS_KINDS:
        raise ValueError(f"unknown operation access '{access}'")

    def wrap(fn: Handler) -> Handler:
        for level in levels:
            _handlers[(name, level)] = (fn, types)
            _access[(name, level)] = access
        if not advertise:
            return fn
        url = definition or f"http://hl7.org/fhir/OperationDefinition/{name}"
        if "system" in levels:
            register_operation(name, url, None)
        if types and ({"type", "instance"} & set(levels)):
            register_operation(name, url, types)
        return fn

    return wrap


def dispatch(call: OperationCall) -> Any:
    level = "instance" if call.res_id else "type" if call.res_type else "system"
    found = _handlers.get((call.name, level))
    if not found:
        where = f"{call.res_type or ''}{'/' + call.res_id if call.res_id else ''}"
        raise FhirError.of(404 if level == "system" else 400, "not-supported", f"Operation ${call.name} is not supported at {level} level{' on ' + where if where else ''}")
    fn, types = found
    if types and call.res_type and call.res_type not in types:
        raise FhirError.of(400, "not-supported", f"Operation ${call.name} is not supported on {call.res_type}")
    authorize(call.ctx.principal, AccessRequest(f"operation:{call.name}", call.res_type, call.res_id, operation_access=_access.get((call.name, level), "read")))
    if call.res_id and call.res_type:  # an instance the caller may not see is not there (404)
        with call.db.read() as conn:
            check_visible(conn, call.ctx, call.res_type, call.res_id)
    return fn(call)
