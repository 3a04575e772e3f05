"""`CodeSystem/$subsumes` (http://hl7.org/fhir/R4/codesystem-operation-subsumes.html).

In: ``codeA`` + ``codeB`` with ``system`` (or ``codingA`` + ``codingB``), or
an instance call. Out: Parameters ``outcome`` = equivalent | subsumes |
subsumed-by | not-subsumed, following the system's is-a hierarchy. A code the
system does not define is a 404.
"""

from __future__ import annotations

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..terminology.params import OpParams, parameters
from ._terminology import code_system_for

DEFINITION = "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes"


@operation("subsumes", ("type", "instance"), types=("CodeSystem",), definition=DEFINITION)
def subsumes(call: OperationCall) -> Outcome:
    p = OpParams(call)
    a, b = p.coding("codingA") or {}, p.coding("codingB") or {}
    code_a, code_b = p.str("codeA") or a.get("code"), p.str("codeB") or b.get("code")
    if not code_a or not code_b:
        raise FhirError.of(400, "required", "$subsumes needs codeA and codeB (or codingA and codingB)")
    system = p.str("system") or a.get("system") or b.get("system")
    for coding in (a, b):
        if coding.get("system") and system and coding["system"] != system:
            raise FhirError.of(400, "invalid", "codingA and codingB must be from the same system as 'system'")
    with call.db.read() as conn:
        cs = code_system_for(conn, call, system, p.str("version"))
    for name, code in (("codeA", code_a), ("codeB", code_b)):
        if cs.get(code) is None:
            raise FhirError.of(404, "not-found", f"Code '{code}' is not in CodeSystem {cs.url}", name)
    return Outcome(status=200, body=jsonio.dumps(parameters(("outcome", ("code", cs.subsumes(code_a, code_b))))))
