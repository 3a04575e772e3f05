"""Write rules for national identifiers: valid numbers, one active patient each.

A wrong national identifier means the wrong patient's record, so a value that
fails its scheme's check is refused (422, nothing stored), and a second active
Patient with the same number is refused (409) unless configured otherwise.
A birthDate that contradicts the number is only a warning: registries hold
such records, and the number wins when they are linked.
"""

from __future__ import annotations

import logging
from datetime import date

import orjson
from sqlalchemy import Connection, select

from ..errors import FhirError, Issue
from ..storage import repository as repo
from ..storage.schema import idx_token, resources
from . import birth_date, check, scheme_for_system

log = logging.getLogger("fhir_server.identifiers")

# Person resources whose birthDate can be compared with the number.
PERSON_TYPES = {"Patient", "RelatedPerson", "Practitioner", "Person"}


def _identifiers(resource: dict) -> list[tuple[int | None, dict]]:
    ident = resource.get("identifier")
    if isinstance(ident, list):
        return [(i, x) for i, x in enumerate(ident) if isinstance(x, dict)]
    if isinstance(ident, dict):
        return [(None, ident)]
    return []


def national_identifiers(resource: dict) -> list[tuple[str, str, str]]:
    """(canonical system, normalised value, path) of each valid national identifier."""
    out = []
    for i, ident in _identifiers(resource):
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(system, str) or not isinstance(value, str) or scheme_for_system(system) is None:
            continue
        result = check(system, value)
        if result.ok:
            out.append((result.scheme.system, result.normalised, f"identifier[{i}]" if i is not None else "identifier"))
    return out


def find_by_national_identifier(conn: Connection, res_type: str, system: str, normalised: str) -> list[tuple[int, str, bytes | None]]:
    """Current resources indexed under (canonical system, normalised value)."""
    repo.flush(conn)
    stmt = (
        select(resources.c.pk, resources.c.res_id, resources.c.content)
        .join(idx_token, idx_token.c.res_pk == resources.c.pk)
        .where(
            idx_token.c.res_type == res_type,
            idx_token.c.param == "identifier",
            idx_token.c.system == system,
            idx_token.c.code == normalised,
            resources.c.deleted.is_(False),
        )
        .distinct()
    )
    return [(r[0], r[1], bytes(r[2]) if r[2] is not None else None) for r in conn.execute(stmt)]


def make_rule(unique_identity: bool):
    def national_identifier_rule(conn: Connection, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
        warnings: list[Issue] = []
        valid: list[tuple[str, str, str]] = []
        for i, ident in _identifiers(resource):
            system, value = ident.get("system"), ident.get("value")
            if not isinstance(system, str) or scheme_for_system(system) is None:
                continue
            path = f"{res_type}.identifier[{i}].value" if i is not None else f"{res_type}.identifier.value"
            if not isinstance(value, str) or not value.strip():
                raise FhirError.of(422, "required", f"{scheme_for_system(system).name}: the identifier has no value", path)
            result = check(system, value)
            if not result.ok:
                raise FhirError.of(422, "value", result.error or f"{result.scheme.name} {value} is not valid", path)
            valid.append((result.scheme.system, result.normalised, path))
            if res_type in PERSON_TYPES and isinstance(resource.get("birthDate"), str):
                warnings.extend(_birth_date_warning(res_type, resource["birthDate"], system, value, result.scheme.name))
        if unique_identity and res_type == "Patient" and resource.get("active") is not False:
            for system, normalised, path in valid:
                repo.lock_key(conn, "national-identity", system, normalised)
                for _pk, other_id, content in find_by_national_identifier(conn, "Patient", system, normalised):
                    if other_id == res_id or content is None:
                        continue
                    if orjson.loads(content).get("active") is False:
                        continue
                    raise FhirError.of(
                        409,
                        "duplicate",
                        f"An active Patient with this {scheme_for_system(system).name} exists already: Patient/{other_id}",
                        path,
                    )
        return warnings

    return national_identifier_rule


def _birth_date_warning(res_type: str, stated: str, system: str, value: str, scheme_name: str) -> list[Issue]:
    encoded = birth_date(system, value)
    if encoded is None or len(stated) < 10:
        return []
    try:
        given = date.fromisoformat(stated[:10])
    except ValueError:
        return []
    if given == encoded:
        return []
    message = f"{res_type}.birthDate {given.isoformat()} contradicts the {scheme_name}, which encodes {encoded.isoformat()}"
    log.warning(message)
    return [Issue("warning", "business-rule", message, [f"{res_type}.birthDate"])]


def setup(settings) -> None:
    from ..rest import rules

    rules.register(make_rule(settings.unique_national_identity))


def on_database(db, settings) -> None:
    """Serve one NamingSystem per scheme, kept in step with the scheme table."""
    from ..rest import interactions as ix
    from ..rest.context import RequestContext
    from . import naming_systems

    ctx = RequestContext(base_url="")
    for ns in naming_systems():
        with db.write() as conn:
            current = repo.read_current(conn, "NamingSystem", ns["id"])
            if current is not None and not current.deleted and current.content:
                stored = orjson.loads(current.content)
                stored.pop("meta", None)
                if stored == ns:
                    continue
            ix.update(conn, ctx, "NamingSystem", ns["id"], ix.ParsedResource.from_bytes(orjson.dumps(ns)))


__all__ = ["national_identifiers", "find_by_national_identifier", "setup", "on_database"]
