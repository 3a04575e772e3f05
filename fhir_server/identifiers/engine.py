"""Checking, normalising and decoding identifiers by Identifier.system."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .registry import Scheme, all_schemes, scheme_for_system
from .validators import VALIDATORS, Invalid, Parsed


class UnknownSchemeError(ValueError):
    """check() was asked about a system that is not a national scheme."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of check(); error names the scheme, the value and the fault."""

    ok: bool
    scheme: Scheme
    normalised: str | None
    error: str | None


def _parse(scheme: Scheme, value: str | None, today: date | None) -> Parsed:
    text = (value or "").strip()
    if not text:
        raise Invalid("is empty")
    return VALIDATORS[scheme.validator](text, today or date.today())


def _try(system: str | None, value: str | None, today: date | None) -> Parsed | None:
    scheme = scheme_for_system(system)
    if scheme is None:
        return None
    try:
        return _parse(scheme, value, today)
    except Invalid:
        return None


def check(system: str, value: str, today: date | None = None) -> CheckResult:
    """Validate value under the scheme of system.

    `today` is the reference date for the future-birth check and for the
    century of 10-digit Swedish numbers.  Raises UnknownSchemeError if the
    system is not a national scheme (callers should ask scheme_for_system).
    """
    scheme = scheme_for_system(system)
    if scheme is None:
        raise UnknownSchemeError(f"{system!r} is not a known national identifier system")
    try:
        parsed = _parse(scheme, value, today)
    except Invalid as exc:
        shown = (value or "").strip()
        label = f"{scheme.name} {shown}" if shown else scheme.name
        return CheckResult(False, scheme, None, f"{label}: {exc}")
    return CheckResult(True, scheme, parsed.normalised, None)


def normalise(system: str, value: str, today: date | None = None) -> str | None:
    """Canonical written form; None if invalid or the system is not national."""
    p = _try(system, value, today)
    return p.normalised if p else None


def written_forms(system: str, value: str, today: date | None = None) -> list[str]:
    """Common written forms of a valid number (canonical first); [] if invalid."""
    p = _try(system, value, today)
    return list(p.written_forms) if p else []


def birth_date(system: str, value: str, today: date | None = None) -> date | None:
    """Birth date encoded in the number, if the scheme encodes one."""
    p = _try(system, value, today)
    return p.birth_date if p else None


def sex(system: str, value: str, today: date | None = None) -> str | None:
    """'male' / 'female' as encoded in the number, if the scheme encodes it."""
    p = _try(system, value, today)
    return p.sex if p else None


def candidates_without_system(value: str, today: date | None = None) -> list[tuple[str, str]]:
    """(canonical system, normalised) for each scheme value is valid under.

    Schemes with a free format (reserve numbers) are skipped, else every
    bare value would match them.
    """
    out: list[tuple[str, str]] = []
    for scheme in all_schemes():
        if not scheme.bare_value_search:
            continue
        try:
            parsed = _parse(scheme, value, today)
        except Invalid:
            continue
        out.append((scheme.system, parsed.normalised))
    return out
