"""National person identifier engine (SE, DK, NO, FI, PL).

Pure functions over the scheme table in mappings/national_identifiers.yaml:
look up schemes by Identifier.system, validate and normalise values, decode
birth date and sex, and publish NamingSystem resources.
"""

from .engine import (
    CheckResult,
    UnknownSchemeError,
    birth_date,
    candidates_without_system,
    check,
    normalise,
    sex,
    written_forms,
)
from .naming import naming_systems
from .registry import Scheme, all_schemes, canonical_system, scheme_for_system

__all__ = [
    "CheckResult",
    "Scheme",
    "UnknownSchemeError",
    "all_schemes",
    "birth_date",
    "candidates_without_system",
    "canonical_system",
    "check",
    "naming_systems",
    "normalise",
    "scheme_for_system",
    "sex",
    "written_forms",
]
