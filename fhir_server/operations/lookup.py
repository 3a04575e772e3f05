"""`CodeSystem/$lookup` (http://hl7.org/fhir/R4/codesystem-operation-lookup.html).

In: ``system`` + ``code`` (or ``coding``), optional ``version``,
``displayLanguage`` and ``property`` (repeatable; default: all). Out: a
Parameters with ``name``, ``version``, ``display``, ``definition``
(as a property), ``designation`` parts and ``property`` parts (the concept's
properties plus ``parent`` / ``child`` from the hierarchy). An unknown system
or code is a 404 with an OperationOutcome.
"""

from __future__ import annotations

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..terminology.params import OpParams, parameters
from ._terminology import code_system_for

DEFINITION = "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup"


def display_in(concept, language: str | None) -> str | None:
    """The display of `concept` in `language` (a designation whose language matches), else its display."""
    if language:
        want = language.lower()
        for d in concept.designations:
            lang = str(d.get("language") or "").lower()
            if lang and (lang == want or lang.split("-")[0] == want.split("-")[0]) and d.get("value"):
                return d["value"]
    return concept.display


@operation("lookup", ("type", "instance"), types=("CodeSystem",), definition=DEFINITION)
def lookup(call: OperationCall) -> Outcome:
    p = OpParams(call)
    coding = p.coding("coding") or {}
    system = p.str("system") or coding.get("system")
    code = p.str("code") or coding.get("code")
    if not code:
        raise FhirError.of(400, "required", "$lookup needs 'code' (with 'system') or 'coding'", "code")
    wanted = set(p.all_str("property"))
    with call.db.read() as conn:
        cs = code_system_for(conn, call, system, p.str("version"))
    concept = cs.get(code)
    if concept is None:
        raise FhirError.of(404, "not-found", f"Code '{code}' is not in CodeSystem {cs.url}", "code")

    def want(name: str) -> bool:
        return not wanted or name in wanted

    items: list = [("name", cs.name or cs.url), ("version", cs.version),
                   ("display", display_in(concept, p.str("displayLanguage")) or concept.code)]
    if want("definition") and concept.definition:
        items.append(("property", [("code", ("code", "definition")), ("value", concept.definition)]))
    if want("designation") or not wanted:
        for d in concept.designations:
            part = [("language", ("code", d.get("language"))) if d.get("language") else ("language", None),
                    ("use", ("coding", d["use"])) if isinstance(d.get("use"), dict) else ("use", None),
                    ("value", d.get("value"))]
            items.append(("designation", part))
    for prop in concept.properties:
        name = prop.get("code")
        if not isinstance(name, str) or not want(name):
            continue
        value = next(((k[5:], v) for k, v in prop.items() if k.startswith("value")), None)
        if value is not None:
            kind, v = value
            items.append(("property", [("code", ("code", name)), ("value", (kind[0].lower() + kind[1:], v))]))
    for rel, codes in (("parent", concept.parents), ("child", concept.children)):
        if want(rel):
            for c in codes:
                items.append(("property", [("code", ("code", rel)), ("value", ("code", c))]))
    return Outcome(status=200, body=jsonio.dumps(parameters(*items)))
