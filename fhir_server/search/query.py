"""Turn search parameters into SQLAlchemy Core conditions over ``resources``.

Every parameter becomes ``resources.pk IN (SELECT res_pk FROM idx_<type> ...)``
(or NOT IN for :not / :missing), so AND of parameters is AND of conditions,
OR within a parameter is OR inside one subquery, and chains / _has nest the
same builder recursively. All values are bound parameters; the SQL is plain
enough to behave identically on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import ColumnElement, and_, false, not_, or_, select, true
from sqlalchemy.sql import FromClause, operators
from sqlalchemy.sql.elements import BooleanClauseList

from ..errors import FhirError
from ..storage.schema import INDEX_TABLES, idx_reference, resources
from . import local_base, national, registry
from .registry import SearchParam
from .aliases import alias_of
from .prefix import StartsWith
from .values import (
    LEN_CODE,
    LEN_ID,
    LEN_Q_CODE,
    LEN_SYSTEM,
    LEN_URI,
    UCUM_SYSTEM,
    cut,
    like_escape,
    normalize,
    parse_date_range,
    parse_number,
    parse_reference,
    split_unescaped,
    ucum_canonical,
    unescape,
)

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
ORDERED_TYPES = {"date", "number", "quantity"}
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "missing", "of-type", "in", "not-in", "above", "below"},
    "reference": {"missing", "identifier", "above", "below"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
}
UNSUPPORTED_MODIFIERS = {"in", "not-in", "above", "below"}  # on reference: canonical hierarchies, not supported
TERMINOLOGY_MODIFIERS = {"in", "not-in", "above", "below"}  # on token: answered by fhir_server.terminology
MAX_CHAIN_DEPTH = 6
# Comma-separated values (OR) per parameter; `_id` lists become one IN (...) and may be longer.
MAX_OR_VALUES = 100
MAX_ID_VALUES = 1000


def bad(msg: str, expr: str | None = None) -> FhirError:
    return FhirError.of(400, "invalid", msg, expr)


def unsupported(msg: str, expr: str | None = None) -> FhirError:
    """Unknown/unsupported parameter: the one kind of error Prefer: handling=lenient ignores."""
    return FhirError.of(400, "not-supported", msg, expr)


def live(r: FromClause) -> ColumnElement:
    return r.c.deleted == false()


@dataclass
class QueryContext:
    base_url: str = ""
    depth: int = 0
    warnings: list[str] = field(default_factory=list)
    conn: object | None = None  # the search's connection: token :in/:below & co. resolve value sets and code systems
    access: Callable | None = None  # search.access.Access: the caller's visibility per type


def _reach(ctx: QueryContext, res_type: str, r2: FromClause, what: str) -> list[ColumnElement]:
    """The access condition on a type a chain or _has passes through: 403 when the
    caller may not search that type at all (the chain would reveal hidden data)."""
    if ctx.access is None:
        return []
    from .access import criteria_condition

    vis = ctx.access(res_type, "s")
    if vis is not None and not vis:
        raise FhirError.of(403, "forbidden", f"{what} passes through {res_type}, which the token may not search (a {res_type} search scope is missing)", what)
    cond = criteria_condition(res_type, vis, r2, ctx.base_url)
    return [] if cond is None else [cond]


def lookup_param(res_type: str | None, code: str) -> SearchParam | None:
    params = registry.search_parameters_for(res_type) if res_type else registry.common_parameters()
    sp = params.get(code)
    return None if sp is not None and sp.pending else sp  # pending: not searchable until $reindex


# ---------------------------------------------------------------- entry point


def param_condition(ctx: QueryContext, res_type: str | None, name: str, value: str, r: FromClause) -> ColumnElement:
    """The condition for one ``name=value`` pair on the resources alias ``r``."""
    if ctx.depth > MAX_CHAIN_DEPTH:
        raise bad(f"Search chain too deep in '{name}'", name)
    if name.startswith("_has:"):
        return _has_condition(ctx, res_type, name, value, r)
    if name == "_type":
        types = [t.strip() for t in value.split(",") if t.strip()]
        for t in types:
            if not registry.is_resource_type(t):
                raise bad(f"Unknown resource type '{t}' in _type", "_type")
        return r.c.res_type.in_(types)
    head, dot, rest = name.partition(".")
    if dot:
        return _chain_condition(ctx, res_type, head, rest, value, r)
    code, _, modifier = name.partition(":")
    sp = lookup_param(res_type, code)
    if sp is None:
        raise unsupported(f"Unknown search parameter '{code}'" + (f" for resource type {res_type}" if res_type else ""), code)
    if code == "_id":
        return _id_condition(modifier, value, r)
    if code == "_lastUpdated":
        if modifier == "missing":
            return false() if _bool(value, name) else true()
        if modifier:
            raise bad(f"Modifier ':{modifier}' is not valid for '{code}'", name)
        return or_(*(_date_cond(v, r.c.last_updated, r.c.last_updated, point=True, name=name)
                     for v in _values(value, name=name)))
    if sp.type == "special" or not sp.expression:
        raise unsupported(f"Search parameter '{code}' is not supported", code)
    if modifier and modifier != "missing" and sp.type == "reference" and registry.is_resource_type(modifier):
        return _index_condition(ctx, res_type, sp, "type:" + modifier, value, r)
    allowed = MODIFIERS.get(sp.type, {"missing"})
    if modifier and modifier not in allowed:
        raise bad(f"Modifier ':{modifier}' is not valid for {sp.type} parameter '{code}'", name)
    if modifier in UNSUPPORTED_MODIFIERS and sp.type == "reference":
        raise unsupported(f"Modifier ':{modifier}' on '{code}' is not supported yet", name)
    return _index_condition(ctx, res_type, sp, modifier, value, r)


def _values(value: str, limit: int = MAX_OR_VALUES, name: str | None = None) -> list[str]:
    """Comma-separated alternatives (OR); empty alternatives are dropped. More
    than `limit` is a 400 on every database (SQLite refuses deep expression
    trees; a long OR list is also a costly query anywhere)."""
    vals = [v for v in split_unescaped(value, ",") if v != ""]
    if not vals:
        raise bad("Empty search value")
    if len(vals) > limit:
        raise bad(f"Too many alternatives ({len(vals)}) in one search parameter: at most {limit} comma-separated values", name)
    return vals


def _bool(value: str, name: str) -> bool:
    if value not in ("true", "false"):
        raise bad(f"':missing' takes true or false, got '{value}'", name)
    return value == "true"


def _id_condition(modifier: str, value: str, r: FromClause) -> ColumnElement:
    ids = [cut(unescape(v), LEN_ID) for v in _values(value, MAX_ID_VALUES, "_id")]
    if modifier == "missing":
        return false() if _bool(value, "_id:missing") else true()
    if modifier == "not":
        return r.c.res_id.not_in(ids)
    if modifier:
        raise bad(f"Modifier ':{modifier}' is not valid for '_id'", "_id")
    return r.c.res_id.in_(ids)


# ---------------------------------------------------------------- indexed parameters


def _index_condition(ctx: QueryContext, res_type: str | None, sp: SearchParam, modifier: str, value: str,
                     r: FromClause) -> ColumnElement:
    table = alias_of(INDEX_TABLES[sp.type])
    base = [table.c.param == sp.code]
    if res_type:
        base.insert(0, table.c.res_type == res_type)
    if modifier == "missing":
        has = r.c.pk.in_(select(table.c.res_pk).where(*base))
        return not_(has) if _bool(value, f"{sp.code}:missing") else has
    if sp.type == "composite":
        return r.c.pk.in_(_composite_subquery(ctx, res_type, sp, value))
    builder = _BUILDERS[sp.type]
    values = _values(value, name=sp.code)
    if sp.type == "token" and modifier in ("", "not") and registry.is_boolean_token(res_type, sp.expression):
        for v in values:  # a boolean element holds true or false: anything else is a mistake, not "no match"
            if v.rpartition("|")[2] not in ("true", "false"):
                raise bad(f"'{sp.code}' is a boolean: search it with true or false, not '{v}'", sp.code)
    conds = [builder(ctx, sp, modifier, v, table) for v in values]
    # (type AND param AND a) OR (type AND param AND b), not type AND param AND (a OR b):
    # SQLite uses an index per disjunct only when each disjunct is complete.
    alternatives = [c for cond in conds for c in _disjuncts(cond)]
    sub = select(table.c.res_pk).where(or_(*(and_(*base, c) for c in alternatives)))
    if modifier in ("not", "not-in"):
        return r.c.pk.not_in(sub)
    return r.c.pk.in_(sub)


def _disjuncts(cond: ColumnElement) -> list[ColumnElement]:
    """The members of a top-level OR (or the condition itself)."""
    if isinstance(cond, BooleanClauseList) and cond.operator is operators.or_:
        return [c for member in cond.clauses for c in _disjuncts(member)]
    return [cond]


def _split_prefix(v: str, sp_type: str, name: str) -> tuple[str, str]:
    if len(v) > 2 and v[:2] in PREFIXES and not v[2].isalpha():
        return v[:2], v[2:]
    if len(v) > 2 and v[:2].isalpha() and v[:2].islower() and not v[2].isalpha() and sp_type != "date":
        raise bad(f"Unknown prefix '{v[:2]}' in '{name}={v}'", name)
    return "eq", v


def _string(ctx: QueryContext, sp: SearchParam, modifier: str, v: str, t: FromClause) -> ColumnElement:
    raw = unescape(v)
    if modifier == "exact":
        return t.c.value_exact == raw
    if modifier == "contains":
        return t.c.value_norm.like(f"%{like_escape(normalize(raw))}%", escape="\\")
    return StartsWith(t.c.value_norm, normalize(raw))


def _token(ctx: QueryContext, sp: SearchParam, modifier: str, v: str, t: FromClause) -> ColumnElement:
    if modifier in TERMINOLOGY_MODIFIERS:
        from ..terminology.search import token_codes

        pairs = token_codes(ctx.conn, modifier, unescape(v), f"{sp.code}:{modifier}")
        by_system: dict[str | None, list[str]] = {}
        for system, code in pairs:
            by_system.setdefault(system, []).append(cut(code, LEN_CODE))
        # a `code` element is indexed without its (implicit) system: it matches by code alone
        by_system[None] = sorted({c for codes in by_system.values() for c in codes})
        conds = []
        for system, codes in by_system.items():
            sys_cond = t.c.system == cut(system, LEN_SYSTEM) if system else t.c.system.is_(None)
            for i in range(0, len(codes), 500):  # bind-parameter limits: chunk long IN lists
                conds.append(and_(sys_cond, t.c.code.in_(codes[i:i + 500])))
        return or_(*conds) if conds else false()
    if modifier == "text":
        norm = like_escape(normalize(unescape(v)))
        return or_(t.c.text_norm.like(f"{norm}%", escape="\\"), t.c.text_norm.like(f"% {norm}%", escape="\\"))
    if modifier == "of-type":
        parts = [unescape(p) for p in split_unescaped(v, "|")]
        if len(parts) != 3 or not all(parts[1:]):
            raise bad(f"':of-type' needs system|code|value, got '{v}'", f"{sp.code}:of-type")
        codes = {parts[2]} | {c for _, c in national.bare_value_candidates(parts[2])}
        conds = [t.c.type_code == cut(parts[1], 64), t.c.code.in_(sorted(cut(c, LEN_CODE) for c in codes))]
        if parts[0]:
            conds.append(t.c.type_system == cut(parts[0], 256))
        return and_(*conds)
    parts = split_unescaped(v, "|", 1)
    if len(parts) == 1:
        code = unescape(parts[0])
        cond = t.c.code == cut(code, LEN_CODE)
        if sp.code == "identifier" or sp.code.endswith("-identifier"):
            alts = [and_(t.c.system == s, t.c.code == c) for s, c in national.bare_value_candidates(code)]
            if alts:
                return or_(cond, *alts)
        return cond
    system, code = cut(unescape(parts[0]), LEN_SYSTEM), cut(unescape(parts[1]), LEN_CODE)
    if system:
        canon = national.canonical(system, code or "0")[0]
        forms = national.search_forms(system, code) if code else []
        if canon != system or len(forms) > 1:  # a national scheme: any alias, any written form
            if not code:
                return t.c.system == canon
            return and_(t.c.system == canon, t.c.code.in_([cut(f, LEN_CODE) for f in forms]))
    if system == "" and code:
        return and_(t.c.system.is_(None), t.c.code == code)
    if code == "":
        return t.c.system == system
    return and_(t.c.system == system, t.c.code == code)


def _uri(ctx: QueryContext, sp: SearchParam, modifier: str, v: str, t: FromClause) -> ColumnElement:
    u = cut(unescape(v), LEN_URI) or ""
    if modifier == "below":
        return t.c.uri.like(like_escape(u) + "%", escape="\\")
    if modifier == "above":
        cands = {u}
        for i, ch in enumerate(u):
            if ch == "/" and i > u.find("://") + 2:
                cands.add(u[:i])
                cands.add(u[: i + 1])
        return t.c.uri.in_(sorted(cands))
    return t.c.uri == u


def _reference(ctx: QueryContext, sp: SearchParam, modifier: str, v: str, t: FromClause) -> ColumnElement:
    raw = unescape(v)
    if modifier == "identifier":
        parts = split_unescaped(v, "|", 1)
        if len(parts) == 1:
            return t.c.ident_value == cut(unescape(parts[0]), LEN_CODE)
        s, c = unescape(parts[0]), unescape(parts[1])
        systems, forms = national.reference_identifier_forms(s, c)
        if systems:  # a national number: stored as written, so any alias of the system, any written form
            return and_(t.c.ident_value.in_([cut(f, LEN_CODE) for f in forms]),
                        t.c.ident_system.in_([cut(x, LEN_SYSTEM) for x in systems]))
        conds = [t.c.ident_value == cut(c, LEN_CODE)] if c else []
        conds.append(t.c.ident_system.is_(None) if s == "" else t.c.ident_system == cut(s, LEN_SYSTEM))
        return and_(*conds)
    if modifier.startswith("type:"):
        rtype = modifier[5:]
        if rtype not in sp.targets and sp.targets:
            raise bad(f"'{sp.code}' cannot refer to {rtype}", f"{sp.code}:{rtype}")
        rid = raw.split("/")[-1] if "/" in raw else raw
        return and_(t.c.target_type == rtype, t.c.target_id == cut(rid, LEN_ID))
    base = ctx.base_url.rstrip("/")
    if "|" in raw:
        raw = raw.split("|", 1)[0]  # canonical with version: the version is not indexed
    local = raw
    if base and raw.startswith(base + "/"):
        local = raw[len(base) + 1:]
    elif "://" in raw:  # another spelling of our base: an alias, or behind a proxy
        local = local_base.local_form(raw, base) or raw
    rtype, rid, url = parse_reference(local)
    if rtype and rid:
        cond = and_(t.c.target_type == rtype, t.c.target_id == cut(rid, LEN_ID))
        alts = [cond]
        if base:
            alts.append(t.c.url == cut(f"{base}/{rtype}/{rid}", LEN_URI))
        if raw != local:
            alts.append(t.c.url == cut(raw, LEN_URI))
        return or_(*alts)
    if "/" not in raw and ":" not in raw and not raw.startswith("#"):
        return t.c.target_id == cut(raw, LEN_ID)  # bare id: any target type
    return t.c.url == cut(url or raw, LEN_URI)


def _date_cond(v: str, low, high, point: bool = False, name: str = "") -> ColumnElement:
    """Range semantics of http://hl7.org/fhir/R4/search.html#prefix for stored [low, high)."""
    prefix, text = _split_prefix(v, "date", name)
    try:
        sl, sh = parse_date_range(text.replace(" ", "+"))
    except ValueError:
        raise bad(f"Invalid date '{text}' for '{name}'", name) from None

    def h_gt(x):  # stored high > x
        if x is None:
            return false()
        return low >= x if point else or_(high.is_(None), high > x)

    def l_lt(x):  # stored low < x
        return low < x if point else or_(low.is_(None), low < x)

    def l_ge(x):
        if x is None:
            return false()
        return low >= x if point else and_(low.is_not(None), low >= x)

    def h_le(x):  # stored high <= x
        if x is None:
            return true()
        return low < x if point else and_(high.is_not(None), high <= x)

    eq = and_(l_ge(sl), h_le(sh))
    if prefix == "eq":
        if point or sh is None:
            return eq
        # low <= high <= sh: the redundant `low <= sh` bounds the (res_type, param, low) index
        # range on both sides, where `low >= sl` alone reads every later date
        return and_(eq, low <= sh)
    if prefix == "ne":
        return not_(eq)
    if prefix == "gt":
        return h_gt(sh)
    if prefix == "lt":
        return l_lt(sl)
    if prefix == "ge":
        return or_(h_gt(sh), eq)
    if prefix == "le":
        return or_(l_lt(sl), eq)
    if prefix == "sa":
        return l_ge(sh)
    if prefix == "eb":
        return h_le(sl)
    # ap: overlap with the search range widened by 10% of its distance from now (at least a day)
    now = datetime.now(timezone.utc)
    gap = max(abs(now - sl) * 0.1, timedelta(days=1))
    lo, hi = sl - gap, (sh or sl) + gap
    return and_(l_lt(hi), h_gt(lo)) if not point else and_(low >= lo, low < hi)


def _date(ctx: QueryContext, sp: SearchParam, modifier: str, v: str, t: FromClause) -> ColumnElement:
    return _date_cond(v, t.c.low, t.c.high, name=sp.code)


def _range_cond(prefix: str, num: float, lo_s: float, hi_s: float, low, high) -> ColumnElement:
    """Prefix semantics on stored closed ranges [low, high] (points have low == high)."""
    eq = and_(low >= lo_s, high < hi_s)
    if prefix == "eq":
        return eq
    if prefix == "ne":
        return not_(eq)
    if prefix == "gt":
        return high > num
    if prefix == "lt":
        return low < num
    if prefix == "ge":
        return high >= num
    if prefix == "le":
        return low <= num
    if prefix == "sa":
        return low > num
    if prefix == "eb":
        return high < num
    d = abs(num) * 0.1
    return and_(low <= num + d, high >= num - d)


def _number(ctx: QueryContext, sp: SearchParam, modifier: str, v: str, t: FromClause) -> ColumnElement:
    prefix, text = _split_prefix(v, "number", sp.code)
    try:
        num, lo, hi = parse_number(text)
    except ValueError:
        raise bad(f"Invalid number '{text}' for '{sp.code}'", sp.code) from None
    return _range_cond(prefix, num, lo, hi, t.c.low, t.c.high)


def _quantity(ctx: QueryContext, sp: SearchParam, modifier: str, v: str, t: FromClause) -> ColumnElement:
    parts = split_unescaped(v, "|")
    if len(parts) not in (1, 3):
        raise bad(f"Quantity must be number or number|system|code, got '{v}'", sp.code)
    prefix, text = _split_prefix(parts[0], "quantity", sp.code)
    try:
        num, lo, hi = parse_number(text)
    except ValueError:
        raise bad(f"Invalid quantity '{text}' for '{sp.code}'", sp.code) from None
    cond = _range_cond(prefix, num, lo, hi, t.c.low, t.c.high)
    if len(parts) == 1:
        return cond
    system, code = unescape(parts[1]), unescape(parts[2])
    conds = [cond]
    if system:
        conds.append(t.c.system == system)
    if code:
        conds.append(or_(t.c.code == cut(code, LEN_Q_CODE), t.c.unit == cut(code, LEN_Q_CODE)) if not system
                     else t.c.code == cut(code, LEN_Q_CODE))
    exact = and_(*conds)
    if code and system in ("", UCUM_SYSTEM):
        cc, cnum = ucum_canonical(code, num)
        if cc is not None:
            f = cnum / num if num else ucum_canonical(code, 1.0)[1]
            ccond = _range_cond(prefix, num * f, lo * f, hi * f, t.c.canon_value, t.c.canon_value)
            return or_(exact, and_(t.c.canon_code == cc, ccond))
    return exact


_BUILDERS: dict[str, Callable] = {
    "string": _string,
    "token": _token,
    "uri": _uri,
    "reference": _reference,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
}


def _composite_subquery(ctx: QueryContext, res_type: str | None, sp: SearchParam, value: str):
    """Component rows of one combination share (res_pk, grp): join them and test each."""
    ors = []
    for alt in _values(value, name=sp.code):
        parts = split_unescaped(alt, "$")
        if len(parts) != len(sp.components):
            raise bad(f"'{sp.code}' needs {len(sp.components)} '$'-separated values, got '{alt}'", sp.code)
        tables, conds = [], []
        for i, (comp, part) in enumerate(zip(sp.components, parts)):
            if comp.type not in _BUILDERS:
                raise bad(f"Composite '{sp.code}' is not supported", sp.code)
            t = alias_of(INDEX_TABLES[comp.type])
            csp = SearchParam(comp.code, comp.type, "", "", comp.expression)
            conds.append(t.c.param == f"{sp.code}${i}")
            if res_type:
                conds.append(t.c.res_type == res_type)
            conds.append(_BUILDERS[comp.type](ctx, csp, "", part, t))
            if tables:
                conds.append(t.c.res_pk == tables[0].c.res_pk)
                conds.append(t.c.grp == tables[0].c.grp)
            tables.append(t)
        ors.append(select(tables[0].c.res_pk).select_from(*tables).where(*conds))
    if len(ors) == 1:
        return ors[0]
    from sqlalchemy import union

    return union(*ors)


# ---------------------------------------------------------------- chains and _has


def _chain_condition(ctx: QueryContext, res_type: str | None, head: str, rest: str, value: str,
                     r: FromClause) -> ColumnElement:
    code, _, tmod = head.partition(":")
    sp = lookup_param(res_type, code)
    if sp is None:
        raise unsupported(f"Unknown search parameter '{code}'" + (f" for resource type {res_type}" if res_type else ""), code)
    if sp.type != "reference":
        raise bad(f"'{code}' is not a reference parameter and cannot be chained", head)
    next_code = rest.split(".", 1)[0].split(":", 1)[0]
    if tmod:
        if not registry.is_resource_type(tmod):
            raise bad(f"Unknown resource type '{tmod}' in chain '{head}'", head)
        targets = [tmod]
    else:
        cands = list(sp.targets) or sorted(registry.resource_types())
        targets = [t for t in cands if next_code.startswith("_has") or next_code in registry.search_parameters_for(t)]
        if len(targets) > 1:
            raise bad(f"Chain '{head}.{rest}' is ambiguous (targets {', '.join(targets)}); "
                      f"use '{code}:Type.{rest}'", head)
    if not targets:
        raise unsupported(f"Unknown search parameter '{next_code}' in chain '{head}.{rest}'", head)
    target = targets[0]
    r2 = alias_of(resources)
    sub_ctx = QueryContext(ctx.base_url, ctx.depth + 1, ctx.warnings, conn=ctx.conn, access=ctx.access)
    inner = select(r2.c.res_id).where(r2.c.res_type == target, live(r2),
                                      param_condition(sub_ctx, target, rest, value, r2),
                                      *_reach(ctx, target, r2, f"{head}.{rest}"))
    ref = alias_of(idx_reference)
    conds = [ref.c.param == code, ref.c.target_type == target, ref.c.target_id.in_(inner)]
    if res_type:
        conds.insert(0, ref.c.res_type == res_type)
    return r.c.pk.in_(select(ref.c.res_pk).where(*conds))


def _has_condition(ctx: QueryContext, res_type: str | None, name: str, value: str, r: FromClause) -> ColumnElement:
    """`_has:Observation:patient:code=x`: resources referenced by matching Observations."""
    parts = name.split(":", 3)
    if len(parts) < 4 or not parts[3]:
        raise bad(f"Invalid _has parameter '{name}': use _has:Type:reference:parameter", name)
    _, src_type, ref_code, rest = parts
    if not registry.is_resource_type(src_type):
        raise bad(f"Unknown resource type '{src_type}' in '{name}'", name)
    sp = lookup_param(src_type, ref_code)
    if sp is None or sp.type != "reference":
        raise bad(f"'{ref_code}' is not a reference parameter of {src_type}", name)
    if res_type is None:
        raise bad("_has needs a resource type", name)
    if src_type == "AuditEvent":  # the access log's rows (audit.log_links)
        from ..audit.log_links import has_ids

        return r.c.res_id.in_(has_ids(ctx, res_type, ref_code, rest, value, name))
    r2 = alias_of(resources)
    sub_ctx = QueryContext(ctx.base_url, ctx.depth + 1, ctx.warnings, conn=ctx.conn, access=ctx.access)
    src = select(r2.c.pk).where(r2.c.res_type == src_type, live(r2),
                                param_condition(sub_ctx, src_type, rest, value, r2),
                                *_reach(ctx, src_type, r2, name))
    ref = alias_of(idx_reference)
    ids = select(ref.c.target_id).where(ref.c.res_type == src_type, ref.c.param == ref_code,
                                        ref.c.target_type == res_type, ref.c.res_pk.in_(src))
    return r.c.res_id.in_(ids)


# ---------------------------------------------------------------- compartments


def compartment_condition(comp_type: str, comp_id: str, res_type: str | None, r: FromClause) -> ColumnElement:
    if comp_type != "Patient":
        raise bad(f"Compartment '{comp_type}' is not supported (only Patient)")
    if res_type is None:
        raise bad("Compartment search needs a resource type")
    params = registry.patient_compartment().get(res_type, ())
    conds = []
    if params:
        ref = alias_of(idx_reference)
        conds.append(r.c.pk.in_(select(ref.c.res_pk).where(
            ref.c.res_type == res_type, ref.c.param.in_(params), ref.c.target_type == comp_type,
            ref.c.target_id == comp_id)))
    if res_type == comp_type:
        conds.append(r.c.res_id == comp_id)
    return or_(*conds) if conds else false()
