"""Find the Questionnaire a response answers, and the options of a choice item.

`questionnaire` is a canonical: `url|version` names one version; a bare `url`
means the newest active version (latest `date`, then latest lastUpdated; a
draft only when nothing is active); `#id` a Questionnaire contained in the
response. http://hl7.org/fhir/R4/references.html#canonical
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection

from ...model.qr_answers import value_of
from ...model.qr_validation import answer_options
from ...storage import repository as repo


def _current_by_url(conn: Connection, res_type: str, url: str, version: str | None) -> list[dict]:
    from ...search.engine import find_matches

    params = [("url", url)] + ([("version", version)] if version else [])
    pks = [pk for pk, _ in find_matches(conn, res_type, params, limit=200)]
    return [orjson.loads(s.content) for s in repo.read_by_pks(conn, pks) if s.content and not s.deleted]


def _newest(candidates: list[dict]) -> dict | None:
    if not candidates:
        return None
    active = [c for c in candidates if c.get("status") == "active"] or candidates
    return max(active, key=lambda c: (str(c.get("date") or ""), str((c.get("meta") or {}).get("lastUpdated") or "")))


def resolve_canonical(conn: Connection, res_type: str, canonical: str, container: dict | None = None) -> dict | None:
    """The resource a canonical names on this server, or None."""
    if canonical.startswith("#"):
        for c in (container or {}).get("contained") or []:
            if isinstance(c, dict) and c.get("resourceType") == res_type and c.get("id") == canonical[1:]:
                return c
        return None
    url, _, version = canonical.partition("|")
    if not url.strip():
        return None  # "|1.0.0" names no resource (an empty url would match every one)
    return _newest(_current_by_url(conn, res_type, url, version or None))


def options_resolver(conn: Connection, questionnaire: dict):
    """options_of(item) for qr_validation: answerOption, else the codes of an
    answerValueSet this server can enumerate (contained in the Questionnaire, or
    stored with an expansion or an enumerated compose); None when it cannot."""
    cache: dict[str, list[tuple[str, Any]] | None] = {}

    def options_of(item: dict) -> list[tuple[str, Any]] | None:
        if item.get("answerOption"):
            return answer_options(item)
        vs_url = item.get("answerValueSet")
        if not isinstance(vs_url, str):
            return []
        if vs_url not in cache:
            vs = resolve_canonical(conn, "ValueSet", vs_url, questionnaire)
            cache[vs_url] = value_set_codings(vs) if vs else None
        return cache[vs_url]

    return options_of


def value_set_codings(vs: dict) -> list[tuple[str, Any]] | None:
    """('valueCoding', Coding) for each code a ValueSet lists outright; None when it
    is defined by filters or other value sets (needs the terminology engine)."""
    out: list[tuple[str, Any]] = []

    def walk(contains: list) -> None:
        for c in contains or []:
            if isinstance(c, dict):
                if c.get("code"):
                    out.append(("valueCoding", {"system": c.get("system"), "code": c["code"]}))
                walk(c.get("contains") or [])

    expansion = vs.get("expansion")
    if isinstance(expansion, dict) and expansion.get("contains"):
        walk(expansion["contains"])
        return out
    compose = vs.get("compose") or {}
    for inc in compose.get("include") or []:
        if not isinstance(inc, dict) or inc.get("filter") or inc.get("valueSet") or not inc.get("concept"):
            return None
        for c in inc["concept"]:
            if isinstance(c, dict) and c.get("code"):
                out.append(("valueCoding", {"system": inc.get("system"), "code": c["code"]}))
    return out or None


__all__ = ["resolve_canonical", "options_resolver", "value_set_codings", "value_of"]
