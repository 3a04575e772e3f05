"""Message templates per language: data files terminology/templates/notify/<lang>.yaml.

Each file maps a template key (e.g. `appointment-reminder`) to `subject`,
`email` and `sms` texts with {placeholders}; `_phrases` says how the optional
`with` (practitioner) and `where` (place) read in that language, and, for a
placeholder whose value is a code (e.g. `decision`), maps each code to its wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ..errors import FhirError

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "terminology" / "templates" / "notify"
LANGUAGES = ("sv", "pl", "da", "nb", "fi", "en")


@dataclass(frozen=True)
class Rendered:
    language: str
    subject: str
    email: str
    sms: str


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


@lru_cache(maxsize=32)
def _load(directory: str, language: str) -> dict:
    path = Path(directory) / f"{language}.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def available(directory: str | None = None) -> list[str]:
    d = Path(directory or DEFAULT_DIR)
    return sorted(p.stem for p in d.glob("*.yaml"))


def language_of(patient: dict | None, default: str, directory: str | None = None) -> str:
    """The Patient's preferred language (Patient.communication, `preferred` first)
    reduced to a language we have templates for (`sv-SE` -> `sv`, `no` -> `nb`); else `default`."""
    have = set(available(directory))
    comms = list((patient or {}).get("communication") or [])
    comms.sort(key=lambda c: not c.get("preferred"))
    for comm in comms:
        for coding in (comm.get("language") or {}).get("coding") or []:
            code = (coding.get("code") or "").lower().replace("_", "-")
            base = code.split("-")[0]
            base = {"no": "nb", "nn": "nb", "se": "sv"}.get(base, base)
            if base in have:
                return base
    return default if default in have else "en"


def render(key: str, language: str, context: dict, directory: str | None = None) -> Rendered:
    """Fill the template `key` in `language` (falling back to English) with `context`.

    Raises FhirError 422 if no language has the key."""
    d = str(directory or DEFAULT_DIR)
    table = _load(d, language)
    if key not in table:
        language, table = "en", _load(d, "en")
    if key not in table:
        raise FhirError.of(422, "not-found", f"No message template '{key}' (see {d})")
    phrases = table.get("_phrases") or {}
    values = _Blank({k: ("" if v is None else str(v)) for k, v in context.items()})
    for part in ("with", "where"):
        raw = context.get(part)
        values[part] = (phrases.get(part) or "{}").replace("{}", str(raw)) if raw else ""
    for part, wording in phrases.items():
        if isinstance(wording, dict) and context.get(part) is not None:
            # a code-valued placeholder worded per language (e.g. `decision: {claim-approved: ...}`)
            values[part] = str(wording.get(str(context[part]), context[part]))
    t = table[key]
    return Rendered(language, t.get("subject", "").format_map(values), t.get("email", "").format_map(values),
                    t.get("sms", "").format_map(values))
