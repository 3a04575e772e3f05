"""Search statements learned once per *shape*, then filled in without SQLAlchemy.

Planning a search through SQLAlchemy (building the statement, its cache key, the
positional parameters) cost more CPU than the database spent answering it: at 5,000
Patients `Patient?family=F&birthdate=D` took about 1.1 ms to plan and 0.2 ms to run
on SQLite. Yet searches of one shape - the same type, the same parameters in the same
order, each value of the same form (a date with the same prefix, a token with or
without a system), the same result parameters - give the same SQL text; only the
bound values differ, and each is a plain function of one request value (a normalised
string and its successor, a date's range, a token's system and code).

So the first search of a shape is planned by the engine (`engine.prepare_search`), and
its positional parameters are matched against the values the request's parameters
*derive* here with the planner's own helpers (`_derive_*`). When every parameter is
either such a derived value or a shape constant (the type, a parameter code, the page
size, the offset), the shape is learned: later searches of the shape derive their
values and fill them in, with the dialect's bind processing, in a few microseconds.
Which derived values coincide (with each other or with a constant) is part of the key,
so a parameter matching several of them is filled in right whichever it takes.
A shape whose parameters cannot all be explained (a value formed another way) is
planned by the engine every time; so is everything outside the
common forms: modifiers, chains, `_has`, includes, cursors, OR lists, escapes,
`_id`/`_lastUpdated`/`_tag`..., reference, number, quantity and uri parameters, and
every request with access criteria (restricted tokens).

Safety: the first `VERIFY_HITS` hits of each shape are also planned by the engine and
compared (SQL text and parameters); a difference drops the shape for good and logs a
warning. tests/search/test_shapes.py holds both paths to the same SQL and parameters
over thousands of generated searches.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable

from ..errors import FhirError
from . import national, registry
from .engine import CONTROL_PARAMS, DEFAULT_COUNT, MAX_COUNT, PreparedSearch, SearchRequest, _control, _Plan
from .prefix import successor
from .query import LEN_CODE, LEN_ID, LEN_SYSTEM, LEN_URI, _split_prefix, lookup_param
from .values import cut, like_escape, normalize, parse_date_range, parse_reference, split_unescaped, unescape

log = logging.getLogger(__name__)

VERIFY_HITS = 2  # hits per shape also planned by the engine and compared
MAX_LEARN_TRIES = 8  # a shape that cannot be explained this often is left to the engine
MAX_SHAPES = 1024
_ALLOWED_CONTROLS = frozenset(("_count", "_total", "_summary", "_elements", "_sort"))


class _Unfit(Exception):
    """The request is not of a form this module fills in (the engine plans it)."""


# ------------------------------------------------------------------ derived values


def _derive_string(res_type: str, sp, value: str) -> tuple[tuple, dict[str, Any]]:
    norm = normalize(unescape(value))
    succ = successor(norm)
    return ("ranged" if succ is not None else "like",), {"low": norm, "high": succ or "", "pattern": like_escape(norm) + "%"}


def _derive_token(res_type: str, sp, value: str) -> tuple[tuple, dict[str, Any]]:
    if registry.is_boolean_token(res_type, sp.expression) and value.rpartition("|")[2] not in ("true", "false"):
        raise _Unfit  # the engine answers 400
    parts = split_unescaped(value, "|", 1)
    if len(parts) == 1:
        code = unescape(parts[0])
        if (sp.code == "identifier" or sp.code.endswith("-identifier")) and national.bare_value_candidates(code):
            raise _Unfit  # a national number: more alternatives
        return ("code",), {"code": cut(code, LEN_CODE)}
    system, code = cut(unescape(parts[0]), LEN_SYSTEM), cut(unescape(parts[1]), LEN_CODE)
    if system:
        canon = national.canonical(system, code or "0")[0]
        if canon != system or (code and len(national.search_forms(system, code)) > 1):
            raise _Unfit  # a national scheme: aliases and written forms
    if system == "" and code:
        return ("|code",), {"code": code}
    if code == "":
        return ("system|",), {"system": system}
    return ("system|code",), {"system": system, "code": code}


def _derive_date(res_type: str, sp, value: str) -> tuple[tuple, dict[str, Any]]:
    try:
        prefix, text = _split_prefix(value, "date", sp.code)
        low, high = parse_date_range(text.replace(" ", "+"))
    except (FhirError, ValueError):
        raise _Unfit from None
    if prefix == "ap":  # its range depends on the time of the request
        raise _Unfit
    return (prefix, low is None, high is None), {"low": low, "high": high}


def _derive_reference(res_type: str, sp, value: str, base: str) -> tuple[tuple, dict[str, Any]]:
    if "|" in value or ":" in value or value.startswith("#") or not base:
        raise _Unfit  # canonical versions, absolute URLs, urn:, contained: the engine's forms
    if "/" not in value:
        return ("id",), {"id": cut(value, LEN_ID)}
    rtype, rid, _ = parse_reference(value)
    if not (rtype and rid):
        raise _Unfit
    # the target type is part of the shape (a constant of its statements), the id a value
    return ("type/id", rtype), {"id": cut(rid, LEN_ID), "url": cut(f"{base}/{rtype}/{rid}", LEN_URI)}


_DERIVE: dict[str, Callable] = {"string": _derive_string, "token": _derive_token, "date": _derive_date,
                                "reference": _derive_reference}


def _derive(res_type: str, name: str, value: str, base: str) -> tuple[str, tuple, dict[str, Any]]:
    """(parameter code, form, derived values) of one plain `name=value`; _Unfit otherwise."""
    if ":" in name or "." in name or name.startswith("_") or "," in value or "\\" in value:
        raise _Unfit
    sp = lookup_param(res_type, name)
    derive = _DERIVE.get(sp.type) if sp is not None and sp.expression else None
    if derive is None:
        raise _Unfit
    if sp.type == "reference":
        form, values = derive(res_type, sp, value, base)
    else:
        form, values = derive(res_type, sp, value)
    return sp.code, (sp.type, *form), values


def _access_shape(res_type: str, vis, base: str, derived: list, constants: set) -> tuple:
    """The key part of the caller's visibility (security.authz.Criteria, as search.access
    compiles them), its values added to `derived` (at negative indexes) and `constants`."""
    if vis is None:
        return ("open",)
    parts = []
    for c in vis:
        part: list = []
        if c.compartment:
            if c.compartment[0] != "Patient":
                raise _Unfit
            derived.append((-1 - len(derived), {"compartment": c.compartment[1]}))
            constants.add("Patient")
            constants.update(registry.patient_compartment().get(res_type, ()))
            part.append("compartment")
        for kind, pairs in (("param", c.params), ("exclude", c.exclude)):
            for name, value in pairs:
                code, form, values = _derive(res_type, name, value, base)
                derived.append((-1 - len(derived), values))
                constants.add(code)
                if form[1:2] == ("type/id",):
                    constants.add(form[2])
                part.append((kind, name, form))
        for name in c.conditions:
            rule = name.partition(":")[0]
            if not (rule == "case-consent" and res_type not in ("DocumentReference", "Binary")):  # elsewhere `true`
                raise _Unfit
            part.append(rule)
        parts.append(tuple(part))
    return ("criteria", *parts)


def _shape_of(req: SearchRequest) -> tuple[tuple, list[tuple[int, dict[str, Any]]], set]:
    """(shape key, the derived values of each search parameter, the shape's constants);
    _Unfit when the request is not of a learnable form."""
    res_type = req.res_type
    if res_type is None or req.compartment or req.lenient:
        raise _Unfit
    base_url = req.base_url.rstrip("/")
    derived: list[tuple[int, dict[str, Any]]] = []
    # 0, 1: the offset, and the sort keys' "is missing" flags; -1: SQLite's LIMIT before the
    # sort subquery's OFFSET 0 (search.engine._prepare)
    constants: set = {res_type, 0, 1, -1}
    vis = req.access(res_type, "s") if req.access is not None else None
    if vis is not None and not vis:
        raise _Unfit  # nothing visible: the engine answers (an empty Bundle)
    key: list = [res_type, _access_shape(res_type, vis, base_url, derived, constants)]
    count = DEFAULT_COUNT
    for i, (name, value) in enumerate(req.params):
        head = name.split(":", 1)[0]
        if head in CONTROL_PARAMS:
            if name not in _ALLOWED_CONTROLS:
                raise _Unfit
            key.append((name, value))  # result parameters shape the statement: part of the key, values and all
            if name == "_sort":
                constants.update(item.strip().lstrip("-") for item in value.split(",") if item.strip())
            if name == "_count":
                try:
                    count = min(int(value), MAX_COUNT) if value.isascii() and value.isdigit() else -1
                except ValueError:
                    raise _Unfit from None
            continue
        if value == "":
            continue  # ignored, as by the engine
        code, form, values = _derive(res_type, name, value, base_url)
        key.append((name, form))
        derived.append((i, values))
        constants.add(code)
        if form[1:2] == ("type/id",):
            constants.add(form[2])
    if count < 0:
        raise _Unfit
    constants.add(count + 1)
    key.append(_coincidences(derived, constants))
    return tuple(key), derived, constants


def _coincidences(derived: list[tuple[int, dict[str, Any]]], constants: set) -> tuple:
    """Which derived values are equal to each other or to a shape constant (a patient token's
    own id searched as `patient=`, say). Part of the key: within a shape they are then equal in
    every request, so a statement parameter matching several of them may take any. A value equal
    to a constant names that constant: a patient whose id is `subject` (a parameter code) and one
    whose id is `performer` must not share a shape, whose statement takes the code from one slot."""
    by_value: dict[tuple, list[tuple[int, str]]] = {}
    for i, vals in derived:
        for name, v in vals.items():
            by_value.setdefault((type(v), v), []).append((i, name))
    consts = {(type(c), c) for c in constants}
    return tuple(sorted((tuple(sorted(slots)), repr(k) if k in consts else "") for k, slots in by_value.items()
                        if len(slots) > 1 or k in consts))


# ------------------------------------------------------------------ learned shapes


@dataclass
class _Statement:
    sql: str
    slots: list[tuple]  # per positional parameter: ("c", value) or ("d", request index, name); processor last


@dataclass
class Shape:
    page: _Statement | None
    count: _Statement
    template: PreparedSearch  # nkeys, forward, sig; page_q only says whether there is a page query
    key_processors: list
    verify_left: int = VERIFY_HITS


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def _explain(parts, derived: list[tuple[int, dict[str, Any]]], constants: set) -> _Statement | None:
    """Map each positional parameter of a rendered statement (`parts`: SQL, raw values,
    bind processors) to the one derived value it equals, or to a shape constant; None
    when a parameter equals neither, or more than one source (then a request with other
    values must be planned to tell them apart)."""
    sql, raw, procs = parts
    slots: list[tuple] = []
    for value, proc in zip(raw, procs):
        sources = sorted((i, name) for i, vals in derived for name, v in vals.items() if _same(v, value))
        if sources:  # several only when the key says they coincide (`_coincidences`): any will do
            slots.append(("d", *sources[0], proc))
        elif any(_same(value, c) for c in constants):
            slots.append(("c", value, proc))
        else:
            return None
    return _Statement(sql, slots)


def _fill(stmt: _Statement, values: dict[int, dict[str, Any]]) -> tuple[str, tuple]:
    out = []
    for slot in stmt.slots:
        if slot[0] == "c":
            v, proc = slot[1], slot[2]
        else:
            v, proc = values[slot[1]][slot[2]], slot[3]
        out.append(proc(v) if proc is not None else v)
    return stmt.sql, tuple(out)


@dataclass
class Ticket:
    """A request's shape key, derived values and constants (`ShapeCache.ticket`)."""

    key: tuple
    derived: list[tuple[int, dict[str, Any]]]
    constants: set


class ShapeCache:
    """Learned shapes of one dialect (held by `search.fast.CompiledCache`)."""

    def __init__(self) -> None:
        self._shapes: dict[tuple, Shape | int] = {}  # int: failed learning attempts so far
        self._lock = threading.Lock()
        self.hits = 0

    def ticket(self, req: SearchRequest) -> Ticket | None:
        """The request's shape, or None when it is not of a learnable form. Evaluates the
        caller's visibility (`req.access`): give a request whose access answers once
        (`search.fast` does) so that the engine plans with the same criteria."""
        try:
            return Ticket(*_shape_of(req))
        except _Unfit:
            return None

    def plan(self, req: SearchRequest, ticket: Ticket) -> tuple[PreparedSearch, tuple | None, tuple, list, Shape] | None:
        """For a request of a learned shape: (prepared search without statements, page (sql,
        params) or None, count (sql, params), sort-key processors, shape); None otherwise.
        FhirError for a result parameter the engine would refuse."""
        shape = self._shapes.get(ticket.key)
        if not isinstance(shape, Shape):
            return None
        values = dict(ticket.derived)
        plan = _Plan()
        for name, value in req.params:
            base = name.split(":", 1)[0]
            if value == "" and base not in CONTROL_PARAMS:
                continue
            if base in CONTROL_PARAMS:
                _control(plan, req.res_type, name, value)
            plan.accepted.append((name, value))
        base_url = req.base_url.rstrip("/")
        prep = replace(shape.template, req=req, plan=plan, base=base_url, path_url=f"{base_url}/{req.res_type}")
        page = _fill(shape.page, values) if shape.page is not None else None
        self.hits += 1
        return prep, page, _fill(shape.count, values), shape.key_processors, shape

    def learnable(self, ticket: Ticket) -> bool:
        """Whether the engine's statements for the ticket's request should be offered to `learn`."""
        known = self._shapes.get(ticket.key)
        return known is None or (isinstance(known, int) and known < MAX_LEARN_TRIES)

    def learn(self, ticket: Ticket, prep: PreparedSearch, page_parts, count_parts, key_processors: list) -> None:
        """Remember the shape of a search the engine planned (`prep`), when every parameter
        of its statements is explained (`page_parts`/`count_parts`: SQL, raw values, processors)."""
        known = self._shapes.get(ticket.key)
        if isinstance(known, Shape) or (isinstance(known, int) and known >= MAX_LEARN_TRIES):
            return
        if prep.plan.includes or prep.plan.cursor or prep.plan.warnings or count_parts is None:
            return
        page = _explain(page_parts, ticket.derived, ticket.constants) if page_parts is not None else None
        count = _explain(count_parts, ticket.derived, ticket.constants)
        ok = count is not None and (page is not None or prep.page_q is None)
        with self._lock:
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()  # many one-off shapes: start over rather than grow
            if ok:
                template = replace(prep, plan=_Plan(), count_q=None)
                self._shapes[ticket.key] = Shape(page, count, template, key_processors)
            else:
                self._shapes[ticket.key] = (known or 0) + 1

    def verified(self, shape: Shape, fast: tuple, planned: tuple) -> bool:
        """Compare a hit's statements with the engine's; a difference drops the shape."""
        if fast == planned:
            shape.verify_left -= 1
            return True
        with self._lock:
            for k, v in list(self._shapes.items()):
                if v is shape:
                    self._shapes[k] = MAX_LEARN_TRIES
        log.warning("a learned search shape gave other SQL than the planner; the planner answers it from now on")
        return False

    def __len__(self) -> int:
        return sum(1 for v in self._shapes.values() if isinstance(v, Shape))


def answering_once(access):
    """`access` (a request's visibility callable) answering each (type, permission) once
    for this request: the shape and the engine's statements then rest on the same criteria.
    Nothing outlives the request."""
    if access is None:
        return None
    seen: dict[tuple[str, str], Any] = {}

    def once(res_type: str, permission: str):
        k = (res_type, permission)
        if k not in seen:
            seen[k] = access(res_type, permission)
        return seen[k]

    return once
