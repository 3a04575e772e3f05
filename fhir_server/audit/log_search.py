"""Searching the access log: the R4 AuditEvent search parameters over the compact rows.

`GET [base]/AuditEvent?...` (and `_search`, `Patient/ID/AuditEvent`, `?_type=AuditEvent`)
answer here rather than in the generic engine, whose index tables hold no AuditEvents
(audit.log). The Bundle, paging cursor, totals, `_summary`/`_elements` and the checks of the
control parameters are the engine's own (`search.engine`), so a page of the log looks and
pages like any other search.

Parameters (http://hl7.org/fhir/R4/auditevent.html#search):
- `_id`; `date` (recorded) and `_lastUpdated`, with every prefix;
- `patient` (agent.who or entity.what naming a Patient), `agent` (agent.who), `entity`
  (entity.what): references as `Type/id`, an id, or an absolute URL on this server's base;
  `agent:identifier` and `entity:identifier` (the value; a system given is not compared:
  this server's identifiers have none), `altid`;
- `type`, `subtype` (`[system]|code`), `action`, `outcome` (codes), each also with `:not`.
- `_include=AuditEvent:patient|agent|entity[:Type]` (and `*`) returns what they reference,
  as far as the caller may read it.

Anything else is refused with 400 (`Prefer: handling=lenient`: ignored with a warning).
Access: the caller's visibility of AuditEvent (a patient's own compartment, a proxy's
patients) becomes a condition on the patient references, as in the engine.
"""

from __future__ import annotations

from collections import namedtuple

from sqlalchemy import Connection, ColumnElement, and_, false, func, not_, or_, select, true

from ..errors import FhirError
from ..search import engine as eng
from ..search.query import _date_cond, bad, unsupported
from ..search.values import split_unescaped, unescape
from ..storage.schema import audit_log, audit_log_refs
from .context import note_patients
from .log import (AUDIT_TYPE, ROLE_AGENT, ROLE_AGENT_ID, ROLE_ALTID, ROLE_ENTITY, ROLE_ENTITY_ID,
                  ROLE_SUBTYPE, render)

Row = namedtuple("Row", "pk res_type res_id content k0")
_A = audit_log.c
_R = audit_log_refs.c
_REFERENCE_ROLES = {"patient": ROLE_ENTITY | ROLE_AGENT, "agent": ROLE_AGENT, "entity": ROLE_ENTITY}
_IDENTIFIER_ROLES = {"agent": ROLE_AGENT_ID, "entity": ROLE_ENTITY_ID}
_TOKENS = {"type": (_A.type_system, _A.type_code), "subtype": (_A.subtype_system, _A.subtype_code),
           "action": (None, _A.action), "outcome": (None, _A.outcome)}
_SORTS = {"date": _A.recorded, "_lastUpdated": _A.last_updated}
SUPPORTED = ("_id", "_lastUpdated", "date", "patient", "agent", "agent:identifier", "entity", "entity:identifier",
             "altid", "type", "subtype", "action", "outcome")


def is_log_search(res_type: str | None, params: list[tuple[str, str]]) -> bool:
    """Whether a search goes to the log: the type AuditEvent, or a system search whose
    `_type` names only AuditEvent (400 when it names AuditEvent among others)."""
    if res_type is not None:
        return res_type == AUDIT_TYPE
    types = {t.strip() for k, v in params if k == "_type" for t in v.split(",") if t.strip()}
    if AUDIT_TYPE in types and len(types) > 1:
        raise bad("AuditEvents are searched on their own (_type=AuditEvent, or GET [base]/AuditEvent): "
                  "the access log is kept apart from the other resources", "_type")
    return types == {AUDIT_TYPE}


def search(conn: Connection, req: eng.SearchRequest) -> bytes:
    """The searchset Bundle (JSON bytes) of a search of the log."""
    prep = prepare(req)
    if prep.page_q is None:
        return eng.assemble_search(prep, [], False, conn.execute(prep.count_q).scalar_one())
    raw, more = eng.page_of(prep, conn.execute(prep.page_q).all())
    rows = [Row(r.pk, AUDIT_TYPE, r.id, render(r.id, bytes(r.doc)), r.k0 if prep.nkeys else None) for r in raw]
    total = conn.execute(prep.count_q).scalar_one() if eng.needs_count(prep, more) else None
    pks = [r.pk for r in rows]
    note_patients(patients_named(conn, pks))
    included = _included(conn, prep.plan.includes, pks, req.access) if prep.plan.includes and pks else []
    return eng.assemble_search(prep, rows, more, total, included)


def find(conn: Connection, req: eng.SearchRequest, limit: int = 2) -> list[tuple[int, str]]:
    """(pk, id) of up to `limit` matches (conditional create's If-None-Exist)."""
    q = select(_A.pk, _A.id).where(*_conditions(req, eng._Plan())).order_by(_A.pk).limit(limit)
    return [(r.pk, r.id) for r in conn.execute(q)]


def prepare(req: eng.SearchRequest) -> eng.PreparedSearch:
    plan = eng._Plan()
    conds = _conditions(req, plan)
    type_path = AUDIT_TYPE if not req.compartment else f"{req.compartment[0]}/{req.compartment[1]}/{AUDIT_TYPE}"
    base = req.base_url.rstrip("/")
    path_url = f"{base}/{type_path}" if req.res_type else base
    count_q = select(func.count()).select_from(audit_log).where(*conds)
    sig = ",".join(("-" if d else "") + c for c, d in plan.sort)
    if plan.summary == "count" or plan.count == 0:
        return eng.PreparedSearch(req, plan, base, path_url, count_q, None, sig, 0, True)
    if len(plan.sort) > 1 or any(code not in _SORTS for code, _ in plan.sort):
        raise bad(f"The access log sorts by one of {', '.join(_SORTS)} (with - for descending)", "_sort")
    key = _SORTS[plan.sort[0][0]] if plan.sort else None
    desc = bool(plan.sort and plan.sort[0][1])
    last_keys, last_pk, direction = (None, None, "n")
    if plan.cursor:
        last_keys, last_pk, direction = eng._decode_cursor(plan.cursor, sig, 1 if key is not None else 0)
    forward = direction == "n"
    cols = [_A.pk, _A.id, _A.doc, (key if key is not None else _A.pk).label("k0")]
    q = select(*cols).where(*conds)
    if key is None:
        if last_pk is not None:
            q = q.where(_A.pk > last_pk if forward else _A.pk < last_pk)
        q = q.order_by(_A.pk.asc() if forward else _A.pk.desc())
    else:
        up = (not desc) == forward
        if last_keys is not None:
            q = q.where(eng._after([(key, up, last_keys[0], True), (_A.pk, forward, last_pk, False)]))
        q = q.order_by(key.asc() if up else key.desc(), _A.pk.asc() if forward else _A.pk.desc())
    q = q.limit(plan.count + 1)
    return eng.PreparedSearch(req, plan, base, path_url, count_q, q, sig, 1 if key is not None else 0, forward)


def _conditions(req: eng.SearchRequest, plan: eng._Plan) -> list[ColumnElement]:
    conds: list[ColumnElement] = []
    allowed = visibility_condition(req.access, req.base_url)
    if allowed is not None:
        conds.append(allowed)
    if req.compartment:
        comp_type, comp_id = req.compartment
        conds.append(refs_with([f"{comp_type}/{comp_id}"], _REFERENCE_ROLES["patient" if comp_type == "Patient" else "agent"]))
    eng.check_size(req.params)
    for name, value in req.params:
        try:
            if name in eng.IGNORED_PARAMS or name == "_type" or (value == "" and name.split(":", 1)[0] not in eng.CONTROL_PARAMS):
                continue
            base = name.split(":", 1)[0]
            if base in eng.CONTROL_PARAMS:
                eng._control(plan, AUDIT_TYPE, name, value)
                if base in ("_include", "_revinclude"):
                    _check_include(plan.includes[-1])
            else:
                conds.append(param_condition(name, value, req.base_url))
        except FhirError as err:
            if req.lenient and eng._is_ignorable(err):
                plan.warnings.append(f"Ignored: {err.issues[0].diagnostics}")
                continue
            raise
        if name != "_cursor":
            plan.accepted.append((name, value))
    return conds


def visibility_condition(access, base_url: str) -> ColumnElement | None:
    """The caller's visibility of AuditEvent as a condition on log rows (None: all of it).
    A criterion this store cannot express (a named rule, a parameter it does not index)
    grants nothing: the log is never shown more widely than the engine would."""
    if access is None:
        return None
    vis = access(AUDIT_TYPE, "s")
    if vis is None:
        return None
    alts = []
    for c in vis:
        if c.conditions:
            continue
        try:
            parts = []
            if c.compartment:
                comp_type, comp_id = c.compartment
                parts.append(refs_with([f"{comp_type}/{comp_id}"], _REFERENCE_ROLES["patient" if comp_type == "Patient" else "agent"]))
            parts += [param_condition(n, v, base_url) for n, v in c.params]
            parts += [not_(param_condition(n, v, base_url)) for n, v in c.exclude]
        except FhirError:
            continue
        alts.append(and_(*parts) if parts else true())
    return or_(*alts) if alts else false()


def param_condition(name: str, value: str, base_url: str) -> ColumnElement:
    """One search parameter (`name` with its modifier) as a condition on log rows."""
    code, _, modifier = name.partition(":")
    values = [unescape(v) for v in split_unescaped(value, ",")]
    if code == "_id" and not modifier:
        return _A.id.in_(values)
    if code in ("date", "_lastUpdated") and not modifier:
        col = _A.recorded if code == "date" else _A.last_updated
        return or_(*[_date_cond(v, col, None, point=True, name=code) for v in values])
    if code in _REFERENCE_ROLES and (not modifier or modifier[0].isupper()):
        refs = [_reference(code, modifier, v, base_url) for v in values]
        return refs_with(refs, _REFERENCE_ROLES[code])
    if code in _IDENTIFIER_ROLES and modifier == "identifier" or code == "altid" and not modifier:
        role = ROLE_ALTID if code == "altid" else _IDENTIFIER_ROLES[code]
        return refs_with([v.split("|", 1)[-1] for v in values], role)
    if code in _TOKENS and modifier in ("", "not"):
        cond = or_(*[_token(code, v) for v in values])
        return not_(cond) if modifier == "not" else cond
    if code in _TOKENS or code in _REFERENCE_ROLES or code in ("_id", "date", "_lastUpdated", "altid"):
        raise bad(f"Modifier ':{modifier}' is not supported on '{code}' in the access log", name)
    raise unsupported(f"Search parameter '{code}' is not supported on AuditEvent (the access log "
                      f"supports {', '.join(SUPPORTED)})", name)


def _reference(code: str, modifier: str, value: str, base_url: str) -> str:
    base = base_url.rstrip("/") + "/"
    if value.startswith(base):
        value = value[len(base):]
    value = value.partition("/_history/")[0]
    if "/" in value:
        return value
    if modifier:
        return f"{modifier}/{value}"
    if code == "patient":
        return f"Patient/{value}"
    raise bad(f"'{code}' needs a typed reference (Type/id), or a type modifier ({code}:Practitioner=id)", code)


def refs_with(values: list[str], roles: int) -> ColumnElement:
    """Events with one of `values` among their references or identifiers in one of `roles`
    (bits of audit.log.ROLE_*), as a condition on log rows."""
    sub = select(_R.event_pk).where(_R.value.in_(values), _R.roles.op("&")(roles) != 0)
    return _A.pk.in_(sub)


def _token(code: str, value: str) -> ColumnElement:
    system_col, code_col = _TOKENS[code]
    if "|" not in value:
        cond = code_col == value
    else:
        system, _, c = value.partition("|")
        if system_col is None:  # action, outcome: codes of one value set
            cond = code_col == c if c else true()
        elif not system:
            cond = and_(system_col.is_(None), code_col == c)
        elif not c:
            cond = system_col == system
        else:
            cond = and_(system_col == system, code_col == c)
    if code == "subtype" and not value.endswith("|") and not value.startswith("|"):
        cond = or_(cond, refs_with([value], ROLE_SUBTYPE))  # a subtype after the first
    return cond


def _check_include(inc) -> None:
    if inc.reverse or inc.iterate:
        raise unsupported("The access log supports _include=AuditEvent:patient|agent|entity only", "_revinclude" if inc.reverse else "_include")
    if inc.src_type not in (None, AUDIT_TYPE) or (inc.param is not None and inc.param not in _REFERENCE_ROLES):
        raise unsupported(f"_include on AuditEvent takes patient, agent or entity, not '{inc.param}'", "_include")


def _included(conn: Connection, includes, pks: list[int], access) -> list:
    """The resources the page's events reference through the included parameters, as far
    as the caller may read them."""
    from ..search.registry import is_resource_type

    wanted: dict[str, set[str]] = {}
    for inc in includes:
        roles = _REFERENCE_ROLES.get(inc.param or "", ROLE_ENTITY | ROLE_AGENT)
        target = "Patient" if inc.param == "patient" else inc.target
        for chunk in eng._chunks(pks):
            for (value,) in conn.execute(select(_R.value).where(_R.event_pk.in_(chunk), _R.roles.op("&")(roles) != 0)):
                res_type, _, res_id = value.partition("/")
                if res_id and "/" not in res_id and (target is None or res_type == target) and is_resource_type(res_type):
                    wanted.setdefault(res_type, set()).add(res_id)
    return eng._fetch(conn, wanted, access)


def patients_named(conn: Connection, pks: list[int]) -> list[str]:
    """The Patient ids the events `pks` name (the log of this read names them)."""
    out: list[str] = []
    for chunk in eng._chunks(pks):
        q = select(_R.value).where(_R.event_pk.in_(chunk), _R.value.like("Patient/%"),
                                   _R.roles.op("&")(ROLE_ENTITY | ROLE_AGENT) != 0)
        out += [v[len("Patient/"):] for (v,) in conn.execute(q)]
    return out


def visible(conn: Connection, access, base_url: str, pk: int) -> bool:
    cond = visibility_condition(access, base_url)
    if cond is None:
        return True
    return conn.execute(select(_A.pk).where(_A.pk == pk, cond)).first() is not None
