"""Resources a message carries that must be different ones (`distinct_from` in
mappings/v2/messages.yaml).

ADT^A40 names the surviving patient in PID and the merged one in MRG; when MRG-1
carries one of the survivor's own identifiers the message asks to merge a patient
into itself. That is refused before anything is applied (AE, ERR on MRG-1).
Identifiers are compared as written and, for national numbers, in their normalised
form, so `19121212-1212` and `191212121212` are the same. (When the two identifiers
differ but resolve to one stored Patient, the transaction's one-entry-per-resource
rule refuses the Bundle instead.)
"""

from __future__ import annotations

from . import ack


def identifier_keys(resource: dict) -> set[tuple[str, str]]:
    """(system, value) of every identifier; national numbers also as (canonical system,
    normalised value)."""
    from ..identifiers import engine as id_engine
    from ..identifiers import registry as id_registry

    out = set()
    for ident in resource.get("identifier") or []:
        sys_, val = ident.get("system") or "", ident.get("value") or ""
        if not val:
            continue
        out.add((sys_, val))
        canonical = id_registry.canonical_system(sys_) if sys_ else None
        if canonical:
            try:
                norm = id_engine.normalise(sys_, val)
            except Exception:  # noqa: BLE001 - an invalid number compares as written
                norm = None
            out.add((canonical, norm or val))
    return out


def check_distinct(built: dict[str, list[dict]]) -> None:
    """Raise MappingError (-> AE) when a resource with `distinct_from: key` shares an
    identifier with a resource built under that key. `built` is map_message's phase-1
    table: key -> [{resource, rdef, seg, ...}]."""
    from .mapping import MappingError

    for items in built.values():
        for item in items:
            other = item["rdef"].get("distinct_from")
            if not other or other not in built:
                continue
            mine = identifier_keys(item["resource"])
            theirs = set().union(*(identifier_keys(o["resource"]) for o in built[other]))
            shared = mine & theirs
            if shared:
                seg, fld = item["seg"], item["rdef"].get("distinct_field", 1)
                _sys, val = sorted(shared)[0]
                raise MappingError(
                    f"{seg.name}-{fld} ({val}) identifies the same {item['rdef']['resourceType']} as the message's "
                    f"{built[other][0]['seg'].name}: a resource cannot be merged into itself",
                    f"{seg.name}^{seg.index}^{fld}", ack.ERR_INTERNAL)
