"""R4 NamingSystem resources describing the national schemes."""

from __future__ import annotations

from .registry import Scheme, all_schemes

_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_ISO3166 = "urn:iso:std:iso:3166"
_OID_PREFIX = "urn:oid:"
# Publication date of the table; bump when the YAML changes materially.
NAMING_SYSTEM_DATE = "2024-01-01"


def _unique_id(uri: str, preferred: bool) -> list[dict]:
    """A uri entry, plus an oid entry (bare OID) for urn:oid: URIs."""
    entries = [{"type": "uri", "value": uri, "preferred": preferred}]
    if uri.lower().startswith(_OID_PREFIX):
        entries.append({"type": "oid", "value": uri[len(_OID_PREFIX):]})
    return entries


def naming_system(scheme: Scheme) -> dict:
    """One NamingSystem (JSON dict) for a scheme; id is the scheme key."""
    unique: list[dict] = _unique_id(scheme.system, True)
    for alias in scheme.aliases:
        if alias.lower().startswith(_OID_PREFIX):
            unique.append({"type": "oid", "value": alias[len(_OID_PREFIX):]})
        else:
            unique.append({"type": "uri", "value": alias})
    resource = {
        "resourceType": "NamingSystem",
        "id": scheme.key,
        "name": scheme.computer_name,
        "status": "active",
        "kind": "identifier",
        "date": NAMING_SYSTEM_DATE,
        "type": {
            "coding": [{"system": _V2_0203, "code": scheme.type_code}],
            "text": scheme.name,
        },
        "jurisdiction": [{"coding": [{"system": _ISO3166, "code": scheme.country}]}],
        "uniqueId": unique,
    }
    if scheme.responsible:
        resource["responsible"] = scheme.responsible
    if scheme.description:
        resource["description"] = scheme.description
    return resource


def naming_systems() -> list[dict]:
    """NamingSystem resources for every scheme, in table order."""
    return [naming_system(s) for s in all_schemes()]
