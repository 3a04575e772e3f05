"""`ValueSet/$validate-code` and `CodeSystem/$validate-code`
(http://hl7.org/fhir/R4/valueset-operation-validate-code.html,
http://hl7.org/fhir/R4/codesystem-operation-validate-code.html).

In: ``code`` + ``system`` (+ ``display``), or ``coding``, or
``codeableConcept`` (valid when any of its codings is); the value set as for
``$expand`` (instance, ``url``, ``valueSet``), or for CodeSystem the instance
/ ``url``. Out: Parameters ``result`` (boolean), ``message`` when false or
when the display differs, ``display`` (the preferred display). A wrong
code is a ``result`` of false, not an error.
"""

from __future__ import annotations

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..terminology.expand import TerminologyError, expand
from ..terminology.params import OpParams, check_coding, fail, parameters
from ..terminology.service import DbResolver
from ._terminology import code_system_for
from .expand import value_set_of

DEFINITION_VS = "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code"


def _codings(p: OpParams) -> list[dict]:
    cc = p.complex("codeableConcept")
    if cc is not None:
        raw = cc.get("coding")
        codings = [check_coding(c, "codeableConcept") for c in raw] if isinstance(raw, list) else []
        if not codings:
            raise FhirError.of(400, "invalid", "codeableConcept has no coding", "codeableConcept")
        return codings
    coding = p.coding("coding")
    if coding is not None:
        return [coding]
    code = p.str("code")
    if not code:
        raise FhirError.of(400, "required", "$validate-code needs 'code', 'coding' or 'codeableConcept'", "code")
    return [{"system": p.str("system"), "code": code, "display": p.str("display")}]


def _answer(found: list[tuple[dict, str | None]], codings: list[dict], where: str) -> Outcome:
    """found: (coding, preferred display) of the codings that are valid."""
    if not found:
        shown = ", ".join(f"{c.get('system') or ''}|{c.get('code')}" for c in codings)
        return Outcome(status=200, body=jsonio.dumps(parameters(
            ("result", False), ("message", f"The code {shown} is not in {where}"))))
    coding, display = found[0]
    message = None
    given = coding.get("display")
    if given and display and given != display:
        message = f"The display '{given}' is not the display of {coding.get('code')}: '{display}'"
    return Outcome(status=200, body=jsonio.dumps(parameters(("result", True), ("message", message), ("display", display))))


@operation("validate-code", ("type", "instance"), types=("ValueSet", "CodeSystem"), definition=DEFINITION_VS)
def validate_code(call: OperationCall) -> Outcome:
    """One handler for both types (the registry keys operations by name and level)."""
    return validate_code_cs(call) if call.res_type == "CodeSystem" else validate_code_vs(call)


def validate_code_vs(call: OperationCall) -> Outcome:
    p = OpParams(call)
    codings = _codings(p)
    with call.db.read() as conn:
        vs = value_set_of(conn, call, p)
        try:
            entries = {e.key: e for e in expand(vs, DbResolver(conn))}
        except TerminologyError as exc:
            raise fail(exc) from None
    found = []
    for c in codings:
        code, system = c.get("code"), c.get("system")
        if system:
            e = entries.get((system, code))
        else:
            e = next((x for x in entries.values() if x.code == code), None)
        if e is not None:
            found.append((c, e.display))
    return _answer(found, codings, f"the value set {vs.get('url') or '(given)'}")


def validate_code_cs(call: OperationCall) -> Outcome:
    p = OpParams(call)
    codings = _codings(p)
    system = p.str("url") or next((c.get("system") for c in codings if c.get("system")), None)
    with call.db.read() as conn:
        cs = code_system_for(conn, call, system, p.str("version"))
    found = []
    for c in codings:
        if c.get("system") and cs.url and c["system"] != cs.url:
            continue
        concept = cs.get(str(c.get("code")))
        if concept is not None:
            found.append((c, concept.display))
    return _answer(found, codings, f"the code system {cs.url}")
