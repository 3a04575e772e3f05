"""Custom SearchParameters: from a posted resource to a searchable parameter.

Posting a SearchParameter stores it like any resource. `$reindex` then records
it here as *pending*: from that moment every write indexes it, and a job
re-indexes the existing resources of its base types. When the job finishes the
parameter turns *active*: searchable, and listed in the CapabilityStatement.
Every process reloads this table at most every REFRESH_SECONDS.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson
from sqlalchemy import Connection, delete, select, update

from ..errors import FhirError
from ..storage.schema import custom_search_params, resources
from . import registry

REFRESH_SECONDS = 5.0
SUPPORTED_TYPES = {"string", "token", "date", "number", "quantity", "uri", "reference"}
_last_refresh = 0.0


def _definition(sp: dict) -> dict:
    """The parts of a SearchParameter resource the index and query need."""
    return {
        "code": sp["code"],
        "type": sp["type"],
        "base": list(sp["base"]),
        "expression": sp.get("expression"),
        "target": list(sp.get("target") or []),
        "description": sp.get("description") or "",
    }


def _expression_for(expression: str, res_type: str, single_base: bool) -> str | None:
    """The union members of `expression` that apply to `res_type`."""
    parts = [p.strip() for p in expression.split("|")]
    mine = [p for p in parts if p.startswith(res_type + ".") or p.startswith(f"({res_type}.") or p == res_type]
    if mine:
        return " | ".join(mine)
    return expression if single_base else None


def _params(url: str, definition: dict, pending: bool) -> dict[str, registry.SearchParam]:
    out = {}
    bases = definition["base"]
    for base in bases:
        expr = _expression_for(definition["expression"] or "", base, len(bases) == 1)
        if not expr:
            continue
        out[base] = registry.SearchParam(
            code=definition["code"],
            type=definition["type"],
            url=url,
            description=definition["description"],
            expression=expr,
            targets=tuple(definition["target"]),
            base=tuple(bases),
            pending=pending,
        )
    return out


def refresh(conn: Connection) -> None:
    """Install the stored custom parameters into the registry."""
    global _last_refresh
    by_type: dict[str, list[registry.SearchParam]] = {}
    for url, definition, state in conn.execute(
        select(custom_search_params.c.url, custom_search_params.c.definition, custom_search_params.c.state).order_by(custom_search_params.c.url)
    ):
        for base, sp in _params(url, orjson.loads(definition), state != "active").items():
            by_type.setdefault(base, []).append(sp)
    before = registry._custom
    registry.set_custom({t: tuple(v) for t, v in by_type.items()})
    if registry._custom is not before:
        from ..rest.capabilities import capability_statement

        capability_statement.cache_clear()
    _last_refresh = time.monotonic()


def refresh_due() -> bool:
    """Whether the next search must reload the table first (`maybe_refresh`)."""
    return time.monotonic() - _last_refresh > REFRESH_SECONDS


def maybe_refresh(conn: Connection) -> None:
    """Cheap periodic reload, so every process sees another's activations."""
    if refresh_due():
        refresh(conn)


def sync_from_resources(conn: Connection, only_type: str | None = None) -> tuple[list[str], set[str]]:
    """Record new or changed SearchParameter resources as pending.

    Returns (urls now pending, resource types to re-index)."""
    from ..storage.repository import flush

    flush(conn)
    official = registry.official_urls()
    stored = {row.url: row for row in conn.execute(select(custom_search_params))}
    seen: set[str] = set()
    pending: list[str] = []
    types: set[str] = set()
    now = datetime.now(timezone.utc)
    for res_id, content in conn.execute(
        select(resources.c.res_id, resources.c.content).where(resources.c.res_type == "SearchParameter", resources.c.deleted.is_(False))
    ):
        sp = orjson.loads(content)
        url = sp.get("url")
        if not url or url in official or sp.get("status") == "retired":
            continue
        if only_type and only_type not in sp.get("base", []):
            continue
        if sp.get("type") not in SUPPORTED_TYPES or not sp.get("expression"):
            raise FhirError.of(
                400,
                "not-supported",
                f"SearchParameter/{res_id} ({url}): only {', '.join(sorted(SUPPORTED_TYPES))} parameters with an expression can be indexed",
            )
        seen.add(url)
        definition = _definition(sp)
        text = orjson.dumps(definition).decode()
        row = stored.get(url)
        if row is None:
            conn.execute(custom_search_params.insert().values(url=url, res_id=res_id, definition=text, state="pending", updated=now))
        elif row.definition != text or row.state != "active":
            conn.execute(
                update(custom_search_params).where(custom_search_params.c.url == url).values(res_id=res_id, definition=text, state="pending", updated=now)
            )
        else:
            continue
        pending.append(url)
        types.update(definition["base"])
    if only_type is None:
        gone = [u for u in stored if u not in seen]
        if gone:
            conn.execute(delete(custom_search_params).where(custom_search_params.c.url.in_(gone)))
    return pending, types


def activate(conn: Connection, urls: list[str]) -> None:
    if urls:
        conn.execute(
            update(custom_search_params)
            .where(custom_search_params.c.url.in_(urls), custom_search_params.c.state == "pending")
            .values(state="active", updated=datetime.now(timezone.utc))
        )
