"""`GET [base]/$changes`: the commit-ordered change feed a registry pulls.

Parameters: `_type` (comma-separated, a subset of the feed's types, which are
set by FHIR_SERVER_CHANGE_FEED_TYPES; default all of them that the token
reads), `_cursor` (the
opaque value from the previous answer; absent = from the start), `_count`
(default 100, at most 1000).

Answer: a Bundle of type `history` whose entries are the written versions
after the cursor in commit order (oldest first; a deletion has no resource and
request.method DELETE), and a `next` link that always carries the cursor to
continue from, also when the page is empty: the puller keeps that URL and
calls it again later. Pulling with it never skips a version committed out of
order and never returns a version twice (see storage/change_feed.py).

Access: a system/ scope (SMART Backend Services). The feed hands out whole
versions, so each type needs a scope that reads all of it (`system/<type>.r`,
`.rs`, `.read` or `system/*.r...`); a type named in `_type` that the token does
not read, or reads only in part (`system/Observation.rs?category=...`), is a
403. Without `_type`, the feed serves the types the token reads.
"""

from __future__ import annotations

from urllib.parse import urlencode

import orjson

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.interactions import fhir_instant
from ..rest.operations import OperationCall, operation
from ..storage import change_feed as feed
from ..storage import repository as repo

DEFAULT_COUNT = 100
MAX_COUNT = 1000
_types: list[str] = []


def feed_types() -> list[str]:
    return list(_types)


@operation("changes", ("system",), definition="http://fhir-server.example/OperationDefinition/changes", access="system")
def changes(call: OperationCall) -> Outcome:
    if call.method != "GET":
        raise FhirError.of(405, "not-supported", "$changes is read with GET")
    args: dict[str, str] = {}
    for name, value in call.params:
        if name not in ("_type", "_cursor", "_count", "_format", "_pretty"):
            raise FhirError.of(400, "not-supported", f"Parameter '{name}' is not supported by $changes", name)
        args[name] = value
    types = [t.strip() for t in args.get("_type", ",".join(_types)).split(",") if t.strip()]
    unknown = [t for t in types if t not in _types]
    if unknown or not types:
        raise FhirError.of(400, "not-supported", f"$changes serves {', '.join(_types) or 'no types'}; not {', '.join(unknown) or 'an empty _type'}", "_type")
    types = _readable(call, types, explicit="_type" in args)
    try:
        count = int(args.get("_count", DEFAULT_COUNT))
        if not 1 <= count <= MAX_COUNT:
            raise ValueError
    except ValueError:
        raise FhirError.of(400, "invalid", f"_count must be an integer from 1 to {MAX_COUNT}", "_count") from None
    cursor = feed.decode_cursor(args.get("_cursor"))
    with call.db.read() as conn:
        rows = feed.read_after(conn, cursor, types, count)
    entries = [feed_entry(call.ctx.base_url, row) for row in rows]
    if rows:
        cursor = (rows[-1][0], rows[-1][1])
    query = [("_type", ",".join(types)), ("_count", str(count)), ("_cursor", feed.encode_cursor(*cursor))]
    bundle = {"resourceType": "Bundle", "type": "history",
              "link": [{"relation": "next", "url": f"{call.ctx.base_url}/$changes?{urlencode(query)}"}],
              "entry": entries}
    return Outcome(status=200, body=jsonio.dumps(bundle))


def _readable(call: OperationCall, types: list[str], explicit: bool) -> list[str]:
    """The requested types the caller's scopes read in full (403 when a named one is not)."""
    principal = call.ctx.principal
    if principal.unrestricted:
        return types
    from ..security.authz import visibility

    kept = []
    for t in types:
        grants = visibility(principal, t, "r")
        if grants is None:
            kept.append(t)
        elif explicit:
            how = "does not read" if grants == [] else "reads only part of"
            raise FhirError.of(403, "forbidden", f"The token {how} {t}; $changes of {t} needs a scope system/{t}.rs "
                                                 "(or system/*.rs) without conditions", "_type")
    if not kept:
        raise FhirError.of(403, "forbidden", f"The token reads none of the change feed's types ({', '.join(types)}) in full")
    return kept


def _on_change(conn, change) -> None:
    if change.res_type in _types:
        feed.record(conn, change.res_type, change.res_id, change.version_id)


def setup(settings) -> None:
    from .. import events

    _types[:] = [t.strip() for t in (getattr(settings, "change_feed_types", "") or "").split(",") if t.strip()]
    if _types:
        events.subscribe(_on_change)
    else:
        events.unsubscribe(_on_change)


def feed_entry(base_url: str, row) -> dict:
    """A change-feed row as a history-Bundle entry (http.html#history): the version's
    resource (none for a delete), the request that made it and its response."""
    txid, seq, rtype, rid, vid, updated, method, deleted, content = row
    entry: dict = {"fullUrl": f"{base_url}/{rtype}/{rid}"}
    if not deleted and content is not None:
        entry["resource"] = orjson.Fragment(bytes(content))
    entry["request"] = {"method": method, "url": f"{rtype}/{rid}" if method != "POST" else rtype}
    entry["response"] = {"status": "201 Created" if method == "POST" else "204 No Content" if deleted else "200 OK",
                         "etag": f'W/"{vid}"', "lastModified": fhir_instant(repo._utc(updated))}
    return entry
