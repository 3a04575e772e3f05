"""National eID identity -> FHIR identity (Patient, or Practitioner for staff).

An eID broker (BankID, Freja, MitID, Profil Zaufany/ePUAP) puts the person's national
number in a claim (`personnummer`, `cpr`, `pesel`, `ssn`, `sub`, ...). The number is
normalised by the national identifier engine (any written form, any alias of the
system) and looked up among the Patients' (or Practitioners') indexed identifiers.

An unknown person is refused (403) or, with `auth_unknown_person=create`, created from
the verified claims: name from `given_name`/`family_name`, birth date and sex derived
from the national number.
"""

from __future__ import annotations

from ..errors import FhirError
from ..identifiers import engine as ids
from ..identifiers.registry import canonical_system, scheme_for_system


def resolve(db, system: str, value: str, res_type: str = "Patient") -> str | None:
    """The id of the live `res_type` whose national identifier is (system, value), or None.
    400 when the value is not a valid number of that scheme."""
    from ..identifiers.rules import find_by_national_identifier

    if scheme_for_system(system) is None:
        raise FhirError.of(400, "invalid", f"'{system}' is not a known national identifier system")
    normalised = ids.normalise(system, value)
    if normalised is None:
        raise FhirError.of(403, "forbidden", f"The national identity '{value}' is not a valid number of {system}")
    with db.read() as conn:
        rows = find_by_national_identifier(conn, res_type, canonical_system(system), normalised)
    return rows[0][1] if rows else None


def create_patient(db, settings, system: str, value: str, claims: dict) -> str:
    """Create the Patient of a first eID login from the token's verified claims.

    A conditional create on the national identifier (If-None-Exist semantics, under the
    create's lock): a portal's first requests after the login arrive together, and each
    may get here before the Patient exists; they all end with the one Patient."""
    from ..rest import interactions as ix
    from ..rest.context import RequestContext

    system = canonical_system(system) or system
    normalised = ids.normalise(system, value)
    patient: dict = {"resourceType": "Patient", "identifier": [{"system": system, "value": normalised}]}
    name = {}
    if claims.get("family_name"):
        name["family"] = str(claims["family_name"])
    if claims.get("given_name"):
        name["given"] = [str(claims["given_name"])]
    if name:
        patient["name"] = [name]
    born = ids.birth_date(system, value)
    if born:
        patient["birthDate"] = born.isoformat()
    sex = ids.sex(system, value)
    if sex:
        patient["gender"] = sex
    parsed = ix.ParsedResource.from_preserving(patient)
    with db.write() as conn:
        out = ix.create(conn, RequestContext(base_url=""), "Patient", parsed, if_none_exist=f"identifier={system}|{normalised}")
    return out.res_id


def patient_for(db, settings, system: str, value: str, claims: dict, unknown: str = "refuse") -> str:
    """Resolve (or, when configured, create) the Patient of a national identity; 403 if unknown."""
    pid = resolve(db, system, value)
    if pid:
        return pid
    if unknown == "create":
        return create_patient(db, settings, system, value, claims)
    raise FhirError.of(403, "forbidden", "No patient record is registered for this national identity")
