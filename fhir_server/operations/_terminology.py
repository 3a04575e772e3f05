"""What the terminology $operations share: the resolver of the call and the target resource of an instance call."""

from __future__ import annotations

import orjson

from ..errors import FhirError
from ..rest.operations import OperationCall
from ..storage import repository as repo
from ..terminology.codesystem import CodeSystemIndex
from ..terminology.service import DbResolver


def instance_resource(conn, call: OperationCall) -> dict | None:
    """The stored resource of an instance-level call ([type]/[id]/$op), else None."""
    if not call.res_id:
        return None
    stored = repo.read_current(conn, call.res_type, call.res_id)
    if stored is None or stored.deleted:
        raise FhirError.of(404, "not-found", f"{call.res_type}/{call.res_id} is not known")
    return orjson.loads(stored.content)


def code_system_for(conn, call: OperationCall, system: str | None, version: str | None) -> CodeSystemIndex:
    """The CodeSystem of an instance call, or the one named by `system` (404 when unknown)."""
    own = instance_resource(conn, call)
    if own is not None:
        if system and own.get("url") and system != own.get("url"):
            raise FhirError.of(400, "invalid", f"system '{system}' is not the url of CodeSystem/{call.res_id}", "system")
        return CodeSystemIndex(own)
    if not system:
        raise FhirError.of(400, "required", f"${call.name} needs 'system' (or a coding), or call it on CodeSystem/[id]", "system")
    cs = DbResolver(conn).code_system(system, version)
    if cs is None:
        raise FhirError.of(404, "not-found", f"CodeSystem {system} is not known to this server", "system")
    return cs
