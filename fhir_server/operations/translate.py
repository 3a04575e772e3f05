"""`ConceptMap/$translate` (http://hl7.org/fhir/R4/conceptmap-operation-translate.html).

In: ``code`` + ``system`` (or ``coding`` / ``codeableConcept``), the map
as the instance, ``url`` or a ``conceptMap`` resource (else every stored and
shipped map whose ``source`` / ``target`` match the ``source`` / ``target``
parameters), optional ``targetsystem`` and ``reverse``. Out: Parameters
``result`` (true when a match with an equivalence other than unmatched /
disjoint exists), ``message``, and a ``match`` per mapping (equivalence,
concept, source = the map's url). Groups' ``unmapped`` (mode fixed or
provided) apply when no element matches.
"""

from __future__ import annotations

import orjson
from sqlalchemy import select

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..storage.schema import resources
from ..terminology.package import package_resolver
from ..terminology.params import OpParams, check_coding, parameters
from ..terminology.service import DbResolver
from ._terminology import instance_resource

DEFINITION = "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate"
NEGATIVE = {"unmatched", "disjoint"}


def _maps(conn, call: OperationCall, p: OpParams) -> list[dict]:
    own = instance_resource(conn, call)
    if own is not None:
        return [own]
    given = p.resource("conceptMap", "ConceptMap")
    if given is not None:
        return [given]
    url = p.str("url")
    if url:
        cm = DbResolver(conn).concept_map(url)
        if cm is None:
            raise FhirError.of(404, "not-found", f"ConceptMap {url} is not known to this server", "url")
        return [cm]
    source, target = p.str("source"), p.str("target")
    if not source and not target:
        raise FhirError.of(400, "required", "$translate needs a map: call it on ConceptMap/[id], or give 'url', "
                                            "'conceptMap', or 'source'/'target' value sets")
    stored = [orjson.loads(c) for (c,) in conn.execute(select(resources.c.content).where(
        resources.c.res_type == "ConceptMap", resources.c.deleted.is_(False)))]
    by_url = {m.get("url"): m for m in package_resolver().by_url_values("ConceptMap")}
    by_url.update({m.get("url"): m for m in stored})
    out = []
    for m in by_url.values():
        m_source = m.get("sourceUri") or m.get("sourceCanonical")
        m_target = m.get("targetUri") or m.get("targetCanonical")
        if (not source or source == m_source) and (not target or target == m_target):
            out.append(m)
    return out


def _translate(cm: dict, system: str | None, code: str, target_system: str | None, reverse: bool) -> list:
    matches = []
    for group in cm.get("group") or []:
        src, tgt = group.get("source"), group.get("target")
        if reverse:
            src, tgt = tgt, src
        if system and src and system != src:
            continue
        if target_system and tgt and target_system != tgt:
            continue
        hit = False
        for element in group.get("element") or []:
            for t in element.get("target") or []:
                a, b = (element, t) if not reverse else (t, element)
                if a.get("code") != code:
                    continue
                hit = True
                equivalence = t.get("equivalence") or "equivalent"
                concept = {k: v for k, v in (("system", tgt), ("code", b.get("code")), ("display", b.get("display"))) if v}
                matches.append([("equivalence", ("code", equivalence)),
                                ("concept", ("coding", concept)) if concept.get("code") else ("concept", None),
                                ("source", ("uri", cm.get("url"))) if cm.get("url") else ("source", None)])
        unmapped = group.get("unmapped") or {}
        if not hit and not reverse and unmapped.get("mode") in ("fixed", "provided"):
            target_code = unmapped.get("code") if unmapped["mode"] == "fixed" else code
            matches.append([("equivalence", ("code", "equivalent" if unmapped["mode"] == "provided" else "inexact")),
                            ("concept", ("coding", {k: v for k, v in (("system", tgt), ("code", target_code),
                                                                      ("display", unmapped.get("display"))) if v})),
                            ("source", ("uri", cm.get("url"))) if cm.get("url") else ("source", None)])
    return matches


@operation("translate", ("type", "instance"), types=("ConceptMap",), definition=DEFINITION)
def translate(call: OperationCall) -> Outcome:
    p = OpParams(call)
    cc = p.complex("codeableConcept")
    raw = (cc or {}).get("coding")
    codings = [check_coding(c, "codeableConcept") for c in raw] if isinstance(raw, list) else []
    coding = p.coding("coding")
    if coding:
        codings.append(coding)
    if p.str("code"):
        codings.append({"system": p.str("system"), "code": p.str("code")})
    if not codings:
        raise FhirError.of(400, "required", "$translate needs 'code' (with 'system'), 'coding' or 'codeableConcept'", "code")
    reverse = p.bool("reverse")
    with call.db.read() as conn:
        maps = _maps(conn, call, p)
    matches = []
    for cm in maps:
        for c in codings:
            if isinstance(c.get("code"), str):
                matches.extend(_translate(cm, c.get("system"), c["code"], p.str("targetsystem"), reverse))
    result = any(dict(m)["equivalence"][1] not in NEGATIVE for m in matches)
    message = None if result else "No mapping found for " + ", ".join(
        f"{c.get('system') or ''}|{c.get('code')}" for c in codings)
    items = [("result", result), ("message", message)] + [("match", m) for m in matches]
    return Outcome(status=200, body=jsonio.dumps(parameters(*items)))
