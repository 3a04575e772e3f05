"""Reading and writing the resources a claims workflow touches, inside the
caller's transaction, through the same interactions a client's writes use
(validation, indexes, versions, change events)."""

from __future__ import annotations

from ...model import jsonio
from ...rest import interactions as ix
from ...rest.context import RequestContext
from ...security.authz import Principal
from ...storage import repository as repo

# The principal of the server's own workflow writes (ClaimResponse, Task,
# payment-guarantee documents): the insurer's system acting, not the caller.
WORKFLOW_SUBJECT = "workflow:claims"
WORKFLOW_TAG = {"system": "http://fhir-server.local/CodeSystem/workflow", "code": "claims", "display": "Handled by the claims workflow"}


def workflow_ctx(base_url: str) -> RequestContext:
    return RequestContext(base_url=base_url, principal=Principal(subject=WORKFLOW_SUBJECT, scopes=frozenset({"system/*.*"})))


def is_workflow(ctx: RequestContext | None) -> bool:
    return ctx is not None and ctx.principal.subject == WORKFLOW_SUBJECT


def split_ref(ref: str | None) -> tuple[str, str] | None:
    """("Claim", "1") for a relative reference "Claim/1"; None for anything else."""
    if not isinstance(ref, str):
        return None
    parts = ref.split("/")
    if len(parts) == 2 and parts[0][:1].isupper() and ix.ID_RE.match(parts[1]):
        return parts[0], parts[1]
    return None


def ref_of(element) -> str | None:
    return element.get("reference") if isinstance(element, dict) else None


def read(conn, ref: str | None) -> dict | None:
    """The current version of a local reference's target, or None."""
    target = split_ref(ref)
    if target is None:
        return None
    stored = repo.read_current(conn, *target)
    if stored is None or stored.deleted or stored.content is None:
        return None
    return jsonio.parse_plain(stored.content)


def create(conn, ctx: RequestContext, resource: dict, res_id: str | None = None) -> dict:
    parsed = ix.ParsedResource.from_preserving(resource)
    out = ix.create(conn, ctx, resource["resourceType"], parsed, res_id=res_id)
    return jsonio.parse_plain(out.body) if out.body else {**parsed.plain}


def update(conn, ctx: RequestContext, resource: dict) -> dict:
    doc = {k: v for k, v in resource.items() if k != "meta"}
    if (resource.get("meta") or {}).get("tag"):
        doc["meta"] = {"tag": resource["meta"]["tag"]}
    parsed = ix.ParsedResource.from_preserving(doc)
    out = ix.update(conn, ctx, resource["resourceType"], resource["id"], parsed)
    return jsonio.parse_plain(out.body) if out.body else {**parsed.plain}


def find(conn, res_type: str, params: list[tuple[str, str]], limit: int = 50) -> list[dict]:
    from ...search.engine import find_matches

    out = []
    for _pk, rid in find_matches(conn, res_type, params, limit=limit):
        doc = read(conn, f"{res_type}/{rid}")
        if doc is not None:
            out.append(doc)
    return out


def has_workflow_tag(resource: dict | None) -> bool:
    tags = ((resource or {}).get("meta") or {}).get("tag") or []
    return any(t.get("system") == WORKFLOW_TAG["system"] and t.get("code") == WORKFLOW_TAG["code"] for t in tags if isinstance(t, dict))
