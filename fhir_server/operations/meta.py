"""`$meta` (http://hl7.org/fhir/R4/resource-operation-meta.html): the profiles, tags and
security labels in use.

- `GET [base]/$meta`: every one in use on the system;
- `GET [base]/[Type]/$meta`: those in use on that type;
- `GET [base]/[Type]/[id]/$meta`: the resource's own meta (with versionId, lastUpdated).

Answer: `Parameters { return: Meta }`. System and type level come from the search
index (`_tag`, `_security` tokens and `_profile` uris of live resources), so no
resource content is read; the index keeps system and code, not display. They count
only resources the caller may search (the authz seam's visibility compiled into the
query, as for a search): a tag used only in other patients' records stays unknown.
"""

from __future__ import annotations

from sqlalchemy import select

from ..errors import FhirError
from ..model import jsonio
from ..rest import interactions as ix
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..security.authz import AccessRequest, authorize
from ..storage import repository as repo
from ..search.access import system_condition, type_condition
from ..search.query import live
from ..search.registry import resource_types
from ..storage.schema import idx_token, idx_uri, resources
from .meta_common import meta_parameters

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-meta"


def _visible_pks(call: OperationCall):
    """A subquery of the pks the caller may search at this level; None: no restriction."""
    access = call.ctx.access()
    if access is None:
        return None
    r = resources.alias("meta_r")
    if call.res_type:
        cond = type_condition(access, call.res_type, "s", r, call.ctx.base_url)
        if cond is None:
            return None
        return select(r.c.pk).where(r.c.res_type == call.res_type, live(r), cond)
    cond = system_condition(access, sorted(resource_types()), r, call.ctx.base_url)
    if cond is None:
        return None
    return select(r.c.pk).where(live(r), cond)


@operation("meta", ("system", "type", "instance"), definition=DEFINITION)
def meta(call: OperationCall) -> Outcome:
    if call.method not in ("GET", "POST"):
        raise FhirError.of(405, "not-supported", f"$meta does not accept {call.method}")
    if call.res_type:
        ix.check_type(call.res_type)
    if call.res_id:
        authorize(call.ctx.principal, AccessRequest("read", call.res_type, call.res_id))
        if call.res_type == "AuditEvent":  # the access log (audit.log_links)
            from ..audit.log_links import stored_event

            with call.db.read() as conn:
                content = stored_event(conn, call.ctx, call.res_id)
            if content is None:
                raise FhirError.of(404, "not-found", f"AuditEvent/{call.res_id} is not known")
            return meta_parameters(jsonio.parse_plain(content).get("meta") or {})
        with call.db.read() as conn:
            stored = repo.read_current(conn, call.res_type, call.res_id)
        out = ix.read_outcome(call.res_type, call.res_id, stored)  # 404 / 410
        doc = jsonio.parse_plain(out.body)
        return meta_parameters(doc.get("meta") or {})
    authorize(call.ctx.principal, AccessRequest("search-type" if call.res_type else "search-system", call.res_type, None))
    t, u = idx_token.c, idx_uri.c
    tq = select(t.param, t.system, t.code).where(t.param.in_(("_tag", "_security"))).distinct()
    uq = select(u.uri).where(u.param == "_profile").distinct()
    if call.res_type:
        tq = tq.where(t.res_type == call.res_type)
        uq = uq.where(u.res_type == call.res_type)
    seen = _visible_pks(call)
    if seen is not None:
        tq = tq.where(t.res_pk.in_(seen))
        uq = uq.where(u.res_pk.in_(seen))
    with call.db.read() as conn:
        tokens = conn.execute(tq.order_by(t.param, t.system, t.code)).all()
        profiles = [row.uri for row in conn.execute(uq.order_by(u.uri))]
    result: dict = {"profile": profiles, "tag": [], "security": []}
    for param, system, code in tokens:
        coding = {k: v for k, v in (("system", system), ("code", code)) if v}
        result["tag" if param == "_tag" else "security"].append(coding)
    return meta_parameters(result)
