"""National person identifiers in token search (SE, DK, NO, FI, PL).

A personnummer can be written "19121212-1212", "191212121212" or
"121212-1212", under its URI or its OID. Index and query both map an
identifier of a national scheme to (canonical system, canonical value), so
every written form and every system alias finds the same patient. Anything
that is not a valid national number passes through unchanged.
"""

from __future__ import annotations

import logging
from functools import lru_cache

log = logging.getLogger(__name__)

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@lru_cache(maxsize=1)
def _lib():
    try:
        from .. import identifiers

        identifiers.all_schemes()  # loads the table; a broken table disables the feature
        return identifiers
    except Exception:  # noqa: BLE001 - search must work without the identifier table
        log.warning("national identifier table unavailable; identifiers are searched as written", exc_info=True)
        return None


def canonical(system: str | None, value: str | None) -> tuple[str | None, str | None, str | None]:
    """(system, value, default v2-0203 type code) for indexing and for `system|value` searches."""
    lib = _lib()
    if lib is None or not system or not value:
        return system, value, None
    scheme = lib.scheme_for_system(system)
    if scheme is None:
        return system, value, None
    return scheme.system, lib.normalise(system, value) or value, scheme.type_code


def search_forms(system: str | None, value: str | None) -> list[str]:
    """Every form a national number is indexed and matched under (canonical first)."""
    lib = _lib()
    if lib is None or not system or not value or lib.scheme_for_system(system) is None:
        return [value] if value else []
    forms = [lib.normalise(system, value) or value, value, *lib.written_forms(system, value)]
    return list(dict.fromkeys(f for f in forms if f))


def reference_identifier_forms(system: str | None, value: str | None) -> tuple[list[str], list[str]]:
    """For `:identifier` on a reference (Reference.identifier is indexed as written): every
    system alias of a valid national number's scheme and every written form of it;
    ([], []) when `system|value` is not a valid number of a national scheme."""
    lib = _lib()
    if lib is None or not system or not value:
        return [], []
    scheme = lib.scheme_for_system(system)
    if scheme is None or not lib.normalise(system, value):
        return [], []
    return list(scheme.all_systems()), search_forms(system, value)


def bare_value_candidates(value: str) -> list[tuple[str, str]]:
    """(canonical system, canonical value) for every scheme a bare search value is valid under."""
    lib = _lib()
    if lib is None or not value or len(value) > 32:
        return []
    try:
        return lib.candidates_without_system(value)
    except Exception:  # noqa: BLE001
        return []
