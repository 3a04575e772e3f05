"""Resource access for the booking rules (internal writes) and FHIR time values."""

from __future__ import annotations

from datetime import datetime, timezone

from ...rest.internal import read, rewrite

__all__ = ["read", "rewrite", "instant", "fhir_instant"]


def instant(value: str | None) -> datetime | None:
    """A FHIR instant/dateTime with a time as an aware UTC datetime (None when absent or date-only)."""
    if not value or "T" not in value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def fhir_instant(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
