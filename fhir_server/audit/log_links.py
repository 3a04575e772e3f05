"""The other ways to AuditEvents, answered from the access log (audit.log): reverse
includes, `Patient/ID/$everything`, bulk `$export` and the CapabilityStatement entry.

The log's rows are not resources: their keys (`audit_log.pk`) are no `resources.pk`, and
nothing of them is in the search-index tables. Whatever reaches AuditEvents from another
type's request therefore comes here, and the rows handed back carry the log's own keys
only for paging within the log (never to look anything up in `idx_reference`).

- `includes`: `_revinclude=AuditEvent:patient|entity|agent[:Type]` on any other type's
  search (R4 search.html#revinclude): the events whose agent.who (`agent`), entity.what
  (`entity`), or either naming a Patient (`patient`) references a resource of the page,
  as far as the caller may see AuditEvents; `_include:iterate` from those events to what
  they reference (audit.log_search includes the same for a search of the log); and a
  forward include whose target is an AuditEvent (`Provenance:target`), by `fetch`.
  `_revinclude=*` leaves the log out: it is not part of the record (as `$everything`).
- `has_ids`: `_has:AuditEvent:patient|agent|entity:<parameter>=...` on another type's search.
- `everything_*`: the events naming the patient (role `patient`), for `$everything` when
  its `_type` names AuditEvent.
- `export_batch`: one keyset batch of the events an `$export` job writes.
- `capability_entry`: the AuditEvent entry of the CapabilityStatement, as the log serves it;
- `stored_event`: an event for an operation on its instance (`AuditEvent/ID/$validate`).
"""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from typing import Iterable

from sqlalchemy import Connection, ColumnElement, and_, false, func, or_, select, true

from ..errors import FhirError
from ..rest import limits
from ..search.query import unsupported
from ..storage.schema import audit_log, audit_log_refs
from .context import note_patients
from .log import AUDIT_TYPE, ROLE_AGENT, ROLE_ENTITY, render
from .log_search import SUPPORTED, patients_named, refs_with, param_condition, visibility_condition, visible

Row = namedtuple("Row", "pk res_type res_id content")
_A = audit_log.c
_R = audit_log_refs.c
ROLES = {"patient": ROLE_ENTITY | ROLE_AGENT, "agent": ROLE_AGENT, "entity": ROLE_ENTITY}
_CHUNK = 500


def _typed(prefix: str) -> ColumnElement:
    """Reference values starting with `prefix` ("Type/"): LIKE for an index where one
    serves, and the exact, case-sensitive prefix (SQLite's LIKE ignores case)."""
    return and_(_R.value.like(prefix + "%"), func.substr(_R.value, 1, len(prefix)) == prefix)


def _chunks(seq: list, n: int = _CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


# ------------------------------------------------------------------ includes


def includes(conn: Connection, spec, frontier: list[tuple[int, str, str]], access, base_url: str
             ) -> tuple[list[Row], dict[str, set[str]]]:
    """What one `_include`/`_revinclude` spec (search.engine._Include) of an engine search
    takes from the log for `frontier` ((pk, type, id) of the rows it applies to): events
    (rows like the engine's, their pk the log's), and for a forward include from events
    already included, the (type -> ids) of what they reference, for the engine to fetch.
    Nothing for a spec that does not concern AuditEvents."""
    if spec.reverse:
        if spec.src_type != AUDIT_TYPE:
            return [], {}
        return reverse(conn, spec.param, spec.target, frontier, access, base_url), {}
    if spec.src_type not in (None, AUDIT_TYPE):
        return [], {}
    pks = [pk for pk, t, _ in frontier if t == AUDIT_TYPE]
    return [], (forward(conn, spec.param, spec.target, pks) if pks else {})


def reverse(conn: Connection, param: str | None, target: str | None, frontier: Iterable[tuple[int, str, str]],
            access, base_url: str) -> list[Row]:
    """The events naming one of `frontier`'s resources through `param` (patient, agent,
    entity; None: any of them), the named resource of type `target` if given, visible to
    the caller; in the order they were written. 413 past the response size limit."""
    roles = ROLES.get(param or "", ROLE_ENTITY | ROLE_AGENT)
    refs = sorted({f"{t}/{i}" for _, t, i in frontier
                   if (target is None or t == target) and (param != "patient" or t == "Patient")})
    if not refs:
        return []
    allowed = visibility_condition(access, base_url)
    extra = [] if allowed is None else [allowed]
    rows: dict[int, Row] = {}
    budget = limits.ResponseBudget()
    for chunk in _chunks(refs):
        naming = select(_R.event_pk).where(_R.value.in_(chunk), _R.roles.op("&")(roles) != 0)
        last = 0
        while True:  # in pages of keys: a long log past the size limit stops at 413, not in memory
            q = select(_A.pk, _A.id, _A.doc).where(_A.pk.in_(naming), _A.pk > last, *extra).order_by(_A.pk).limit(_CHUNK)
            page = conn.execute(q).all()
            for pk, event_id, doc in page:
                if pk not in rows:
                    content = render(event_id, bytes(doc))
                    budget.take(len(content), "The search page with its included AuditEvents")
                    rows[pk] = Row(pk, AUDIT_TYPE, event_id, content)
            if len(page) < _CHUNK:
                break
            last = page[-1].pk
    out = [rows[pk] for pk in sorted(rows)]
    if out:
        note_patients(patients_named(conn, [r.pk for r in out]))  # the log read names whose events these were
    return out


def fetch(conn: Connection, ids: Iterable[str], access, base_url: str) -> list[Row]:
    """The events `ids` the caller may see (a forward include whose target is an
    AuditEvent: `Provenance?_include=Provenance:target`), in the order they were written."""
    ids = sorted(ids)
    if not ids:
        return []
    allowed = visibility_condition(access, base_url)
    extra = [] if allowed is None else [allowed]
    rows: list[Row] = []
    for chunk in _chunks(ids):
        q = select(_A.pk, _A.id, _A.doc).where(_A.id.in_(chunk), *extra).order_by(_A.pk)
        rows += [Row(pk, AUDIT_TYPE, event_id, render(event_id, bytes(doc))) for pk, event_id, doc in conn.execute(q)]
    if rows:
        note_patients(patients_named(conn, [r.pk for r in rows]))
    return rows


def forward(conn: Connection, param: str | None, target: str | None, pks: list[int]) -> dict[str, set[str]]:
    """(type -> ids) the events `pks` reference through `param` (None: any)."""
    from ..search.registry import is_resource_type

    roles = ROLES.get(param or "", ROLE_ENTITY | ROLE_AGENT)
    if param == "patient":
        target = "Patient"
    wanted: dict[str, set[str]] = {}
    for chunk in _chunks(pks):
        for (value,) in conn.execute(select(_R.value).where(_R.event_pk.in_(chunk), _R.roles.op("&")(roles) != 0)):
            res_type, _, res_id = value.partition("/")
            if res_id and "/" not in res_id and (target is None or res_type == target) and is_resource_type(res_type):
                wanted.setdefault(res_type, set()).add(res_id)
    return wanted


def stored_event(conn: Connection, ctx, event_id: str) -> bytes | None:
    """The event `event_id` as a read answers it, or None when it is unknown or outside
    the caller's view of the log (`ctx`: rest.context.RequestContext); for operations on
    an AuditEvent instance (`AuditEvent/ID/$validate`)."""
    row = conn.execute(select(_A.pk, _A.doc).where(_A.id == event_id)).first()
    if row is None or not visible(conn, ctx.access(), ctx.base_url, row.pk):
        return None
    return render(event_id, bytes(row.doc))


def event_visible(conn: Connection, ctx, event_id: str) -> bool:
    """Whether the event `event_id` exists and lies within the caller's view of the log
    (rest.interactions' check before an operation on an AuditEvent instance)."""
    row = conn.execute(select(_A.pk).where(_A.id == event_id)).first()
    return row is not None and visible(conn, ctx.access(), ctx.base_url, row.pk)


# ------------------------------------------------------------------ _has


def has_ids(ctx, res_type: str, ref_code: str, param: str, value: str, name: str):
    """`[res_type]?_has:AuditEvent:<ref_code>:<param>=<value>` (R4 search.html#has): a
    SELECT of the ids of `res_type` resources that events matching `param=value` name
    through `ref_code` (patient, agent, entity), among the events the caller may search
    (`ctx`: search.query.QueryContext); 403 when it may search none."""
    if ref_code not in ROLES:
        raise unsupported(f"'{name}': _has through AuditEvent takes patient, agent or entity (the access log)", name)
    conds = [param_condition(param, value, ctx.base_url)]
    if ctx.access is not None:
        vis = ctx.access(AUDIT_TYPE, "s")
        if vis is not None and not vis:
            raise FhirError.of(403, "forbidden", f"{name} passes through AuditEvent, which the token may not search", name)
        allowed = visibility_condition(ctx.access, ctx.base_url)
        if allowed is not None:
            conds.append(allowed)
    prefix = f"{res_type}/"
    if ref_code == "patient" and res_type != "Patient":
        conds.append(false())
    return select(func.substr(_R.value, len(prefix) + 1)).where(
        _R.event_pk.in_(select(_A.pk).where(*conds)), _typed(prefix), _R.roles.op("&")(ROLES[ref_code]) != 0)


# ------------------------------------------------------------------ $everything


def everything_conditions(patient_id: str, access, base_url: str, since: datetime | None) -> list[ColumnElement]:
    """The events of a patient's `$everything`: naming them (role patient), visible to
    the caller, last updated at or after `since`."""
    conds = [refs_with([f"Patient/{patient_id}"], ROLES["patient"])]
    allowed = visibility_condition(access, base_url)
    if allowed is not None:
        conds.append(allowed)
    if since is not None:
        conds.append(_A.last_updated >= since)
    return conds


def count(conn: Connection, conds: list[ColumnElement]) -> int:
    return conn.execute(select(func.count()).select_from(audit_log).where(*conds)).scalar_one()


def page(conn: Connection, conds: list[ColumnElement], after: int, limit: int) -> list[Row]:
    """Up to `limit` events after log key `after`, in the order they were written."""
    if limit <= 0:
        return []
    q = select(_A.pk, _A.id, _A.doc).where(*conds, _A.pk > after).order_by(_A.pk).limit(limit)
    rows = [Row(pk, AUDIT_TYPE, event_id, render(event_id, bytes(doc))) for pk, event_id, doc in conn.execute(q)]
    if rows:
        note_patients(patients_named(conn, [r.pk for r in rows]))
    return rows


# ------------------------------------------------------------------ $export


def _query_condition(query: list, base_url: str) -> ColumnElement:
    """One search query (name, value pairs, AND-ed) as a condition on log rows."""
    return and_(true(), *(param_condition(n, v, base_url) for n, v in query if v != "" and n not in ("_format", "_pretty")))


def check_export_filter(conn: Connection, query: list[tuple[str, str]], base_url: str = "") -> None:
    """Run an AuditEvent `_typeFilter` once at kick-off, so that one the log cannot answer
    fails there (400), not in the job."""
    conn.execute(select(_A.pk).where(_query_condition(query, base_url)).limit(1)).all()


def _any_of(queries: list, base_url: str) -> ColumnElement:
    alts = []
    for q in queries:
        try:
            alts.append(_query_condition(q, base_url))
        except FhirError:  # a granular scope the log cannot express grants nothing
            continue
    return or_(*alts) if alts else false()


def _export_base(p: dict) -> str:
    head = p.get("request", "").partition("$export")[0].rstrip("/")
    if p.get("level") == "type":
        head = head.removesuffix("/Patient")
    elif p.get("level") == "instance" and p.get("group"):
        head = head.removesuffix(f"/Group/{p['group']}")
    return head


def export_batch(conn: Connection, p: dict, after: list | None, batch_size: int, list_max: int
                 ) -> tuple[int | None, list[bytes]]:
    """One batch of an export job's AuditEvents (`p`: the job's params, as export.py sets
    them): (the last log key read, or None when none is left; the events' NDJSON lines).
    Each event once, in the order written, up to the job's transaction time, from `_since`
    on (last_updated); a Patient or Group export takes the events naming its patients
    (role patient), more than `list_max` of them matched per batch here; `_typeFilter` and
    the caller's granular scopes as log search parameters; a named access rule
    (security.authz Criteria.conditions) the log cannot express lets no event through."""
    base = _export_base(p)
    conds = [_A.last_updated <= datetime.fromisoformat(p["transaction_time"])]
    if p.get("since"):
        conds.append(_A.last_updated >= datetime.fromisoformat(p["since"]))
    if after is not None:
        conds.append(_A.pk > int(after[-1]))
    patient_set = None
    if p.get("compartment"):
        patients = p.get("patients")
        if patients is None:
            sub = select(_R.event_pk).where(_typed("Patient/"), _R.roles.op("&")(ROLES["patient"]) != 0)
            conds.append(_A.pk.in_(sub))
        elif not patients:
            return None, []
        elif len(patients) <= list_max:
            conds.append(refs_with([f"Patient/{x}" for x in patients], ROLES["patient"]))
        else:
            patient_set = set(patients)
    for limits_ in (p.get("type_filters") or {}, p.get("scope_filters") or {}):
        if AUDIT_TYPE in limits_:
            conds.append(_any_of(limits_[AUDIT_TYPE], base))
    if (p.get("access_conditions") or {}).get(AUDIT_TYPE):
        conds.append(false())
    rows = conn.execute(select(_A.pk, _A.id, _A.doc).where(*conds).order_by(_A.pk).limit(batch_size)).all()
    if not rows:
        return None, []
    if patient_set is not None:
        keep = _naming(conn, [r.pk for r in rows], patient_set)
        rows_kept = [r for r in rows if r.pk in keep]
    else:
        rows_kept = rows
    return rows[-1].pk, [render(r.id, bytes(r.doc)) for r in rows_kept]


def _naming(conn: Connection, pks: list[int], patients: set[str]) -> set[int]:
    keep: set[int] = set()
    for chunk in _chunks(pks):
        q = select(_R.event_pk, _R.value).where(_R.event_pk.in_(chunk), _typed("Patient/"),
                                                _R.roles.op("&")(ROLES["patient"]) != 0)
        keep.update(pk for pk, value in conn.execute(q) if value[len("Patient/"):] in patients)
    return keep


# ------------------------------------------------------------------ CapabilityStatement

INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type", "create")


def capability_entry(entry: dict) -> dict:
    """The CapabilityStatement's AuditEvent entry (a copy of the generic `entry`), as the
    log serves it: its interactions (no update, patch or delete: the log is append-only),
    the search parameters it supports (audit.log_search.SUPPORTED; `:identifier` is a
    modifier of agent and entity), `_include` of patient, agent and entity, no `_revinclude`."""
    names = {s.partition(":")[0] for s in SUPPORTED}
    out = {k: v for k, v in entry.items() if k != "searchRevInclude"}
    out["interaction"] = [{"code": c} for c in INTERACTIONS]
    out.update(versioning="versioned", updateCreate=False, conditionalUpdate=False, conditionalDelete="not-supported")
    out["searchInclude"] = [f"{AUDIT_TYPE}:{p}" for p in ("agent", "entity", "patient")]
    out["searchParam"] = [sp for sp in entry.get("searchParam", []) if sp["name"] in names]
    return out
