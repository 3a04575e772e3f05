"""`$validate` at type and instance level (http://hl7.org/fhir/R4/resource-operation-validate.html).

Runs what a write runs, collecting every problem instead of stopping at the first:

1. the strict structural walk with the required bindings (errors) and the
   extensible/preferred ones (warnings), then the R4B model step;
2. every registered write rule (``rest/rules.py``: national identifiers,
   identity uniqueness, and whatever other modules register), each on its own;
3. the FHIRPath invariants of the R4 definitions (fhirpathpy), an invariant
   that cannot be evaluated being reported as ``information``;
4. the profiles asked for (``profile`` parameter) and those the resource
   claims in ``meta.profile`` that the server holds as StructureDefinitions.

``mode``: ``create`` (default when there is no id), ``update`` (the body's id
must match the URL's), ``delete`` (instance level: the resource must exist;
references to it are reported as warnings). An AuditEvent can be neither
updated nor deleted (the access log is append-only): both modes report that
as an error, as the write would. The answer is always 200 with an
OperationOutcome listing every issue with its expression; a client error in
calling the operation (no resource, bad mode) is a 400.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ..errors import FhirError, Issue, operation_outcome
from ..model import jsonio
from ..model.definitions import resource_types
from ..model.validation import validate_resource
from ..rest import rules
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..storage import repository as repo
from ..storage.schema import idx_reference, resources

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
MODES = ("create", "update", "delete")


def _parse_body(call: OperationCall) -> tuple[dict | None, dict[str, list[str]]]:
    """(resource or None, other parameters) from a raw resource or a Parameters body."""
    params: dict[str, list[str]] = {}
    for k, v in call.params:
        params.setdefault(k, []).append(v)
    if call.method != "POST" or not call.body.strip():
        return None, params
    doc = jsonio.parse_plain(call.body)
    if not isinstance(doc, dict):
        raise FhirError.of(400, "structure", "The body of $validate must be a resource or a Parameters resource")
    if doc.get("resourceType") != "Parameters" or call.res_type == "Parameters":
        return doc, params
    resource = None
    for p in doc.get("parameter") or []:
        if not isinstance(p, dict):
            continue
        name = p.get("name")
        if name == "resource":
            resource = p.get("resource")
            if not isinstance(resource, dict):
                raise FhirError.of(400, "invalid", "The 'resource' parameter must hold a resource", "Parameters.parameter")
        elif isinstance(name, str):
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if isinstance(value, str):
                params.setdefault(name, []).append(value)
    return resource, params


def validation_issues(conn, res_type: str, res_id: str | None, resource: dict,
                      profiles: list[str] | None = None) -> list[Issue]:
    """Every issue a write of `resource` as `res_type` would meet, plus invariants and profiles."""
    from ..model.invariants import check_invariants

    warnings: list[Issue] = []
    issues = validate_resource(resource, res_type, warnings)
    structural_ok = not issues
    issues.extend(warnings)
    if not structural_ok:
        return issues  # the rules, invariants and profiles assume a structurally valid resource
    issues.extend(rules.collect(conn, res_type, res_id, resource))
    issues.extend(check_invariants(resource))
    issues.extend(_profile_issues(conn, resource, profiles or []))
    return issues


def _profile_issues(conn, resource: dict, asked: list[str]) -> list[Issue]:
    from ..model.profiles import check_profiles

    claimed = [p for p in ((resource.get("meta") or {}).get("profile") or []) if isinstance(p, str)]
    return check_profiles(conn, resource, asked, claimed)


def _references_to(conn, res_type: str, res_id: str) -> int:
    stmt = (select(func.count(func.distinct(idx_reference.c.res_pk)))
            .select_from(idx_reference.join(resources, resources.c.pk == idx_reference.c.res_pk))
            .where(idx_reference.c.target_type == res_type, idx_reference.c.target_id == res_id,
                   resources.c.deleted.is_(False)))
    return int(conn.execute(stmt).scalar_one())


def _append_only(res_type: str) -> list[Issue]:
    """What an update or delete of an AuditEvent meets (405 on the REST API)."""
    from ..audit.store import AUDIT_TYPE

    if res_type != AUDIT_TYPE:
        return []
    return [Issue("error", "not-supported", "AuditEvents cannot be changed or deleted: the access log is append-only", [res_type])]


def _stored(conn, call: OperationCall) -> bytes:
    """The stored resource `call` names (an AuditEvent: from the access log, if the caller
    may see it); 404 when there is none."""
    if call.res_type == "AuditEvent":
        from ..audit.log_links import stored_event

        content = stored_event(conn, call.ctx, call.res_id)
    else:
        current = repo.read_current(conn, call.res_type, call.res_id)
        content = None if current is None or current.deleted else current.content
    if content is None:
        raise FhirError.of(404, "not-found", f"{call.res_type}/{call.res_id} is not known")
    return content


def _outcome(issues: list[Issue]) -> Outcome:
    if not any(i.severity in ("error", "fatal") for i in issues):
        issues = [Issue("information", "informational", "Validation successful: no errors")] + issues
    order = {"fatal": 0, "error": 1, "warning": 2, "information": 3}
    issues = sorted(issues, key=lambda i: order.get(i.severity, 4))
    return Outcome(status=200, body=jsonio.dumps(operation_outcome(issues)))


@operation("validate", ("type", "instance"), types=tuple(sorted(resource_types())), definition=DEFINITION)
def validate(call: OperationCall) -> Outcome:
    res_type = call.res_type
    resource, params = _parse_body(call)
    mode = (params.get("mode") or [None])[0]
    if mode is not None and mode not in MODES:
        raise FhirError.of(400, "invalid", f"Unknown $validate mode '{mode}': use create, update or delete", "mode")
    profiles = params.get("profile") or []
    with call.db.read() as conn:
        if mode == "delete":
            if not call.res_id:
                raise FhirError.of(400, "required", "mode=delete validates an existing resource: call it on [type]/[id]/$validate")
            _stored(conn, call)
            issues: list[Issue] = _append_only(res_type)
            n = _references_to(conn, res_type, call.res_id)
            if n:
                issues.append(Issue("warning", "business-rule",
                                    f"{n} resource(s) refer to {res_type}/{call.res_id}; their references would dangle",
                                    [res_type]))
            return _outcome(issues)
        if resource is None:
            if not call.res_id:
                raise FhirError.of(400, "required", "$validate needs a resource: POST it, or a Parameters with 'resource'")
            resource = jsonio.parse_plain(_stored(conn, call))
        if resource.get("resourceType") != res_type:
            raise FhirError.of(400, "invalid", f"The resource is a {resource.get('resourceType')}, not a {res_type}",
                               "resourceType")
        res_id = call.res_id or (resource.get("id") if isinstance(resource.get("id"), str) else None)
        pre: list[Issue] = []
        if mode == "update":
            pre.extend(_append_only(res_type))
            if resource.get("id") is None:
                pre.append(Issue("error", "required", "An update must carry the resource's id", [f"{res_type}.id"]))
            elif call.res_id and resource.get("id") != call.res_id:
                pre.append(Issue("error", "invalid", f"The resource id '{resource.get('id')}' does not match the URL "
                                                     f"id '{call.res_id}'", [f"{res_type}.id"]))
        return _outcome(pre + validation_issues(conn, res_type, res_id, resource, profiles))
