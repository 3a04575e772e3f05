"""`[Type]/[id]/$meta-delete` (http://hl7.org/fhir/R4/resource-operation-meta-delete.html):
remove the profiles, tags and security labels of the `meta` parameter from the
resource (absent ones are no error), without a new version.
Answer: `Parameters { return: Meta }`."""

from __future__ import annotations

from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from .meta_common import remove_from
from .meta_write import change_meta

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-meta-delete"


@operation("meta-delete", ("instance",), definition=DEFINITION, access="write")
def meta_delete(call: OperationCall) -> Outcome:
    return change_meta(call, remove_from)
