"""Profiles on write: a server configured to accept only resources conforming to given profiles.

``FHIR_SERVER_REQUIRED_PROFILES="Patient=http://example.se/StructureDefinition/national-patient,Observation=..."``
makes every create/update/patch of those types pass ``model/profiles.py``
against the StructureDefinition stored on the server under that URL; a
resource that does not conform is refused with 422 and the same
OperationOutcome ``$validate?profile=...`` gives (errors only). When the
configured profile is not on the server, writes of that type are refused with
503 until it is loaded (accepting them would break the promise).
"""

from __future__ import annotations

from ..errors import FhirError, Issue


def parse(setting: str) -> dict[str, list[str]]:
    """'Patient=url1,Patient=url2,Observation=url3' -> {'Patient': [url1, url2], 'Observation': [url3]}."""
    out: dict[str, list[str]] = {}
    for item in (setting or "").split(","):
        item = item.strip()
        if not item:
            continue
        res_type, sep, url = item.partition("=")
        if not sep or not res_type.strip() or not url.strip():
            raise ValueError(f"FHIR_SERVER_REQUIRED_PROFILES: '{item}' is not Type=profile-url")
        out.setdefault(res_type.strip(), []).append(url.strip())
    return out


def make_rule(required: dict[str, list[str]]):
    def required_profiles_rule(conn, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
        urls = required.get(res_type)
        if not urls:
            return []
        from ..terminology.service import DbResolver
        from .profiles import validate_against

        resolver = DbResolver(conn)
        issues: list[Issue] = []
        for url in urls:
            sd = resolver.resource("StructureDefinition", url)
            if sd is None:
                raise FhirError.of(503, "not-found", f"This server requires {res_type} resources to conform to {url}, "
                                                     "which it does not hold yet; try again once it is loaded")
            issues.extend(validate_against(resource, sd, resolver))
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            raise FhirError(422, errors)
        return [i for i in issues if i.severity == "warning"]

    return required_profiles_rule


def setup(settings) -> None:
    from ..rest import rules

    required = parse(getattr(settings, "required_profiles", ""))
    rules.register(make_rule(required), "required_profiles")
