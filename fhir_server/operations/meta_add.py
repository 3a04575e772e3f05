"""`[Type]/[id]/$meta-add` (http://hl7.org/fhir/R4/resource-operation-meta-add.html):
add the profiles, tags and security labels of the `meta` parameter to the resource,
as sets (no duplicates; tags and labels keyed by system+code, profiles by URL),
without a new version. Answer: `Parameters { return: Meta }`."""

from __future__ import annotations

from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from .meta_common import add_to
from .meta_write import change_meta

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-meta-add"


@operation("meta-add", ("instance",), definition=DEFINITION, access="write")
def meta_add(call: OperationCall) -> Outcome:
    return change_meta(call, add_to)
