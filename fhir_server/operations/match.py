"""`Patient/$match` (http://hl7.org/fhir/R4/patient-operation-match.html).

Candidates come from the national identifiers of the given Patient (a match on
one is certain: the number identifies the person) and from family name plus
birth date (probable with a matching given name, else possible). Each entry
carries `search.score` and the match-grade extension.

Only Patients the caller may search are candidates (the authz seam's visibility,
as for a search): a patient/ token matches at most its own record, never learns
that another person's record exists.
"""

from __future__ import annotations

import orjson

from ..errors import FhirError
from ..identifiers.rules import find_by_national_identifier, national_identifiers
from ..model import jsonio
from ..model.validation import validate_resource
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..search.access import visible
from ..search.engine import find_matches
from ..search.values import normalize
from ..storage import repository as repo

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-match"


def _grade(score: float) -> str:
    return "certain" if score >= 0.99 else "probable" if score >= 0.8 else "possible" if score >= 0.5 else "certainly-not"


def _names(patient: dict) -> tuple[set[str], set[str]]:
    family, given = set(), set()
    for n in patient.get("name") or []:
        if n.get("family"):
            family.add(normalize(n["family"]))
        given.update(normalize(g) for g in n.get("given") or [])
    return family, given


def _parse(call: OperationCall) -> tuple[dict, bool, int]:
    if call.method != "POST":
        raise FhirError.of(405, "not-supported", "$match is invoked with POST and a Parameters body")
    body = jsonio.parse_plain(call.body)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError.of(400, "invalid", "$match takes a Parameters resource with a 'resource' parameter")
    params = {p.get("name"): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    patient = (params.get("resource") or {}).get("resource")
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise FhirError.of(400, "required", "The 'resource' parameter must hold a Patient", "Parameters.parameter")
    issues = validate_resource(patient, "Patient")
    if issues:
        raise FhirError(400, issues)
    only_certain = bool((params.get("onlyCertainMatches") or {}).get("valueBoolean", False))
    count = int((params.get("count") or {}).get("valueInteger", 10))
    return patient, only_certain, max(1, min(count, 100))


@operation("match", ("type",), types=("Patient",), definition=DEFINITION)
def match(call: OperationCall) -> Outcome:
    patient, only_certain, count = _parse(call)
    scores: dict[str, float] = {}
    family, given = _names(patient)
    access = call.ctx.access()
    vis = access("Patient", "s") if access is not None else None
    with call.db.read() as conn:
        for system, value, _path in national_identifiers(patient):
            for _pk, rid, _content in find_by_national_identifier(conn, "Patient", system, value):
                if visible(conn, "Patient", rid, vis):
                    scores[rid] = 1.0
        birth = patient.get("birthDate")
        if family and birth:
            for fam in family:
                for _pk, rid in find_matches(conn, "Patient", [("family", fam), ("birthdate", birth)], limit=50,
                                             base_url=call.ctx.base_url, access=access):
                    if rid in scores:
                        continue
                    stored = orjson.loads(repo.read_current(conn, "Patient", rid).content)
                    stored_family, stored_given = _names(stored)
                    if fam in stored_family:  # the search matched a prefix; the name must be equal
                        scores[rid] = 0.8 if given & stored_given else 0.6
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        if only_certain:
            ranked = [kv for kv in ranked if kv[1] >= 0.99]
        entries = []
        for rid, score in ranked[:count]:
            stored = repo.read_current(conn, "Patient", rid)
            entries.append({
                "fullUrl": f"{call.ctx.base_url}/Patient/{rid}",
                "resource": orjson.Fragment(stored.content),
                "search": {"mode": "match", "score": score,
                           "extension": [{"url": MATCH_GRADE, "valueCode": _grade(score)}]},
            })
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return Outcome(status=200, body=jsonio.dumps(bundle))
