"""The CapabilityStatement, generated from what the server really implements."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

from .. import FHIR_VERSION, __version__
from ..model import jsonio
from ..model.definitions import resource_types

TYPE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]
SYSTEM_INTERACTIONS = ["transaction", "batch", "search-system", "history-system"]

# $operations registered by modules that implement them: (name, definition, types or None for system).
_operations: list[tuple[str, str, tuple[str, ...] | None]] = []


def register_operation(name: str, definition: str, types: tuple[str, ...] | None = None) -> None:
    entry = (name, definition, types)
    if entry not in _operations:
        _operations.append(entry)
    capability_statement.cache_clear()


# Extensions on a resource's entry, registered by the modules they describe
# (e.g. the Subscription entry's topic canonicals, Subscriptions Backport IG).
_resource_extensions: dict[str, list[dict]] = {}


def register_resource_extension(res_type: str, extension: dict) -> None:
    found = _resource_extensions.setdefault(res_type, [])
    if extension not in found:
        found.append(extension)
    capability_statement.cache_clear()


def _search_params(res_type: str) -> list[dict]:
    from ..search.ordered import codes_of, system_for_param
    from ..search.registry import search_parameters_for

    out = []
    for code, sp in sorted(search_parameters_for(res_type).items()):
        if not getattr(sp, "supported", True):
            continue
        entry = {"name": code, "type": sp.type}
        if getattr(sp, "url", None):
            entry["definition"] = sp.url
        if getattr(sp, "description", None):
            entry["documentation"] = sp.description
        if sp.type == "token" and (system := system_for_param(res_type, code)):
            rank = " < ".join(codes_of(system))
            entry["documentation"] = (entry.get("documentation", "") + f" _sort follows the rank of the ordered code system {system} ({rank}), not the alphabet.").strip()
        out.append(entry)
    return out


@lru_cache(maxsize=8)
def capability_statement(base_url: str, security: bytes | None = None) -> bytes:
    """The statement for `base_url`; `security` is the JSON of rest.security (from the auth module)."""
    resources = []
    for res_type in sorted(resource_types()):
        entry = {
            "type": res_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
            "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
            "searchInclude": ["*"],
            "searchRevInclude": ["*"],
            "searchParam": _search_params(res_type),
        }
        if res_type == "AuditEvent":  # the access log (audit.log_links)
            from ..audit.log_links import capability_entry

            entry = capability_entry(entry)
        if res_type in _resource_extensions:
            entry["extension"] = list(_resource_extensions[res_type])
        ops = [{"name": n, "definition": d} for n, d, types in _operations if types and res_type in types]
        if ops:
            entry["operation"] = ops
        resources.append(entry)
    rest = {
        "mode": "server",
        **({"security": jsonio.parse_plain(security)} if security else {}),
        "resource": resources,
        "interaction": [{"code": c} for c in SYSTEM_INTERACTIONS],
    }
    system_ops = [{"name": n, "definition": d} for n, d, types in _operations if types is None]
    if system_ops:
        rest["operation"] = system_ops
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(timezone.utc).date().isoformat(),
        "publisher": "fhir-server project",
        "kind": "instance",
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {"description": "FHIR R4 interoperability server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/merge-patch+json", "application/fhir+json"],
        "rest": [rest],
    }
    return jsonio.dumps(statement)
