"""The in-place meta change shared by `$meta-add` and `$meta-delete`.

http://hl7.org/fhir/R4/resource-operation-meta-add.html: executing these operations
does not create a new version; the meta of the current version is changed directly
(versionId and lastUpdated stay), and its search index (`_tag`, `_security`,
`_profile`) follows in the same transaction.
"""

from __future__ import annotations

from typing import Callable

from ..audit.log import refuse_change
from ..errors import FhirError
from ..model import jsonio
from ..model.validation import validate_resource
from ..rest import interactions as ix
from ..rest.context import Outcome
from ..rest.operations import OperationCall
from ..search import local_base
from ..search.indexer import delete_index, index_resource
from ..security.authz import AccessRequest, authorize
from ..storage import repository as repo
from .meta_common import meta_parameters, parse_meta_parameter


def change_meta(call: OperationCall, change: Callable[[dict, dict], dict]) -> Outcome:
    """Apply `change(current_meta, given_meta)` to the resource named by the call."""
    if not call.res_type or not call.res_id:
        raise FhirError.of(400, "not-supported", f"${call.name} is invoked on a resource instance")
    given = parse_meta_parameter(call)
    ix.check_type(call.res_type)
    refuse_change(call.res_type, f"${call.name}")  # 405 on an AuditEvent: the access log is append-only
    with call.db.write() as conn:
        stored = repo.read_current(conn, call.res_type, call.res_id, for_update=True)
        ix.read_outcome(call.res_type, call.res_id, stored)  # 404 / 410
        doc = jsonio.parse_preserving(stored.content)
        authorize(call.ctx.principal, AccessRequest("update", call.res_type, call.res_id, jsonio.to_plain(doc)))
        old = dict(doc.get("meta") or {})
        new = change(old, given)
        new["versionId"], new["lastUpdated"] = old.get("versionId"), old.get("lastUpdated")
        doc["meta"] = {k: v for k, v in new.items() if v is not None}
        plain = jsonio.to_plain(doc)
        errors = [i for i in validate_resource(plain, call.res_type) if i.severity in ("error", "fatal")]
        if errors:
            raise FhirError(400, errors)
        repo.replace_current_content(conn, stored, jsonio.dumps(doc))
        delete_index(conn, stored.pk)
        with local_base.serving(call.ctx.base_url):
            index_resource(conn, stored.pk, call.res_type, plain)
    return meta_parameters(doc["meta"])
