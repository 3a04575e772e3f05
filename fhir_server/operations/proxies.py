"""`GET [base]/Patient/$proxies`: the patients the logged-in person may act for, and why.

The logged-in person is the token's fhirUser (`Patient/...` or `RelatedPerson/...`); a
token without one gets 403. Every rule is evaluated now (security.proxies): a guardian
relationship under the child's self-service age, or a Consent in force naming the person.

Answer (Parameters), one `proxy` parameter per patient, with parts:
- `patient` (Reference, with the name as display);
- `reason` (one per reason): parts `kind` (code: guardian | consent), `source` (Reference:
  the RelatedPerson or Consent), `detail` (string), `until` (dateTime, when the reason
  stops holding, if known), `case` (Reference, repeated: the cases a consent is limited
  to), `action` (code, repeated: the consentaction codes it is limited to; none = all).
Patients for whom a deny provision or an expired rule leaves nothing are not listed.
"""

from __future__ import annotations

from .. import clock
from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..security.acting import person_of
from ..security.proxies import ActingGrant, candidates, load_actor, resolve

DEFINITION = "http://fhir-server.example/OperationDefinition/Patient-proxies"


def _name(patient: dict | None) -> str | None:
    for n in (patient or {}).get("name") or []:
        if isinstance(n, dict):
            text = n.get("text") or " ".join([*(n.get("given") or []), n.get("family") or ""]).strip()
            if text:
                return text
    return None


def _entry(grant: ActingGrant, patient: dict | None) -> dict:
    ref = {"reference": f"Patient/{grant.patient}"}
    if _name(patient):
        ref["display"] = _name(patient)
    parts: list[dict] = [{"name": "patient", "valueReference": ref}]
    for r in grant.reasons:
        sub = [{"name": "kind", "valueCode": r.kind}, {"name": "source", "valueReference": {"reference": r.source}},
               {"name": "detail", "valueString": r.detail}]
        if r.until:
            sub.append({"name": "until", "valueDateTime" if "T" in r.until else "valueDate": r.until.replace("+00:00", "Z")})
        sub += [{"name": "case", "valueReference": {"reference": c}} for c in r.data if c not in grant.denied]
        sub += [{"name": "action", "valueCode": a} for a in r.actions]
        parts.append({"name": "reason", "part": sub})
    return {"name": "proxy", "part": parts}


def _list(conn, person: str) -> list[dict]:
    from ..security.proxies import _read

    now = clock.now()
    who = load_actor(conn, person)
    out = []
    for pid in candidates(conn, person):
        grant = resolve(conn, person, pid, now, who)
        if grant.allowed:
            out.append(_entry(grant, _read(conn, f"Patient/{pid}")))
    return out


@operation("proxies", ("type",), types=("Patient",), definition=DEFINITION, access="authenticated")
def proxies(call: OperationCall) -> Outcome:
    if call.method not in ("GET", "POST"):
        raise FhirError.of(405, "not-supported", "$proxies is called with GET")
    person = person_of(call.ctx.principal)
    if person is None:
        raise FhirError.of(403, "forbidden", "$proxies lists whom the logged-in person may act for: the token names no person (fhirUser Patient/... or RelatedPerson/...)")
    params = call.db.run_read(_list, person)
    return Outcome(status=200, body=jsonio.dumps({"resourceType": "Parameters", "parameter": params}))
