"""History at instance, type and system level, paged by an opaque keyset cursor."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from urllib.parse import urlencode

import orjson
from sqlalchemy import Connection

from ..errors import FhirError
from ..model import jsonio
from ..model.lexical import ascii_int
from ..security.authz import AccessRequest, authorize
from ..security.versions import compartments_for_versions, version_visible
from ..storage import repository as repo
from .context import RequestContext
from .interactions import check_type, check_visible, fhir_instant, parse_instant


def _visible_pks(ctx: RequestContext, res_type: str | None):
    """The pks of resources whose history the caller may see (None: all). Versions of a
    resource are visible while its current version is (a deleted one's history is not,
    to a restricted token)."""
    access = ctx.access()
    if access is None:
        return None
    from sqlalchemy import select

    from ..model.definitions import resource_types
    from ..search.access import system_condition, type_condition
    from ..storage.schema import resources

    r = resources
    if res_type:
        cond = type_condition(access, res_type, "s", r, ctx.base_url)
        return None if cond is None else select(r.c.pk).where(r.c.res_type == res_type, cond)
    cond = system_condition(access, sorted(resource_types()), r, ctx.base_url)
    return None if cond is None else select(r.c.pk).where(cond)

DEFAULT_COUNT = 50
MAX_COUNT = 1000
_KNOWN = {"_since", "_at", "_count", "_page", "_format", "_pretty", "_list"}


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"s": seq})).decode().rstrip("=")


def _decode_cursor(token: str) -> int:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(data["s"])
    except Exception:
        raise FhirError.of(400, "invalid", "Invalid or expired _page cursor", "_page") from None


AT_PREFIXES = ("eq", "ne", "gt", "ge", "lt", "le", "sa", "eb", "ap")


def _parse_at(value: str) -> tuple[str, datetime | None, datetime | None]:
    """`_at` is a date(Time) with search prefixes (http.html#history, search.html#date):
    `2024-05-01` is the day [2024-05-01, 2024-05-02) UTC; `ge2024-05` from May on."""
    from ..search.values import parse_date_range

    text = value.strip().replace(" ", "+")  # an unescaped '+' of a time zone arrives as a space
    prefix = "eq"
    if len(text) > 2 and text[:2].isalpha():
        prefix, text = text[:2], text[2:]
        if prefix not in AT_PREFIXES:
            raise FhirError.of(400, "invalid", f"Unknown prefix '{prefix}' in _at={value}; one of {', '.join(AT_PREFIXES)}", "_at")
    try:
        low, high = parse_date_range(text)
    except ValueError:
        raise FhirError.of(400, "invalid", f"Invalid _at value '{value}': expected a FHIR date, dateTime or instant, optionally with a prefix (ge2024-05-01)", "_at") from None
    utc = timezone.utc
    return prefix, low.astimezone(utc) if low else None, high.astimezone(utc) if high else None


def history(
    conn: Connection,
    ctx: RequestContext,
    res_type: str | None,
    res_id: str | None,
    params: list[tuple[str, str]],
) -> bytes:
    if res_type == "AuditEvent":  # the access log's own store
        from ..audit.log_rest import history as log_history

        return log_history(conn, ctx, res_id, params)
    if res_type:
        check_type(res_type)
    level = "instance" if res_id else "type" if res_type else "system"
    authorize(ctx.principal, AccessRequest(f"history-{level}", res_type, res_id))
    args = dict(params)
    for name, _ in params:
        if name not in _KNOWN and not ctx.lenient:
            raise FhirError.of(400, "not-supported", f"Parameter '{name}' is not supported for history", name)
    since = parse_instant(args["_since"], "_since") if "_since" in args else None
    at = [_parse_at(v) for k, v in params if k == "_at"] or None
    count = min(ascii_int(args["_count"], "_count"), MAX_COUNT) if "_count" in args else DEFAULT_COUNT
    before = _decode_cursor(args["_page"]) if "_page" in args else None

    visible_pks = None
    if res_id:
        current = repo.read_current(conn, res_type, res_id)
        if current is None:
            raise FhirError.of(404, "not-found", f"{res_type}/{res_id} is not known")
        check_visible(conn, ctx, res_type, res_id)
    else:
        visible_pks = _visible_pks(ctx, res_type)

    rows = repo.history_rows(conn, res_type, res_id, since, at, before, count + 1, visible_pks) if count else []
    has_next = len(rows) > count
    rows = rows[:count]
    total = repo.count_history(conn, res_type, res_id, since, visible_pks) if at is None else None
    bounds: dict[str, frozenset[str] | None] = {}  # per type: versions of other compartments are left out
    for t in {row[1] for row in rows}:
        bounds[t] = compartments_for_versions(ctx.principal, t)
    if any(b is not None for b in bounds.values()):
        total = None  # the count cannot tell which earlier versions lie in the caller's compartments
    next_seq = rows[-1][0] if rows else None
    rows = [row for row in rows if version_visible(row[1], row[7], bounds[row[1]], ctx.base_url)]

    path = "/".join(p for p in (res_type, res_id, "_history") if p)
    self_params = [(k, v) for k, v in params if k not in ("_format", "_pretty")]
    links = [{"relation": "self", "url": f"{ctx.base_url}/{path}" + (f"?{urlencode(self_params)}" if self_params else "")}]
    if has_next:
        nxt = [(k, v) for k, v in self_params if k != "_page"] + [("_page", _encode_cursor(next_seq))]
        links.append({"relation": "next", "url": f"{ctx.base_url}/{path}?{urlencode(nxt)}"})

    entries = []
    for seq, rtype, rid, vid, updated, method, deleted, content in rows:
        updated = repo._utc(updated)
        entry: dict = {"fullUrl": f"{ctx.base_url}/{rtype}/{rid}"}
        if not deleted and content is not None:
            entry["resource"] = orjson.Fragment(bytes(content))
        url = f"{rtype}/{rid}" if method != "POST" else rtype
        entry["request"] = {"method": method, "url": url}
        entry["response"] = {
            "status": "201 Created" if method == "POST" else "204 No Content" if deleted else "200 OK",
            "etag": f'W/"{vid}"',
            "lastModified": fhir_instant(updated),
        }
        entries.append(entry)
    bundle: dict = {"resourceType": "Bundle", "type": "history"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    bundle["entry"] = entries
    return jsonio.dumps(bundle)

