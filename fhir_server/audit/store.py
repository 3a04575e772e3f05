"""Helpers of the access log's writers: inserting rows through the driver, and finding the
patients data is about.
"""

from __future__ import annotations

from sqlalchemy import Connection, LargeBinary, select, tuple_

from ..storage.schema import idx_reference, resources

AUDIT_TYPE = "AuditEvent"
_CHUNK = 400  # (type, id) pairs per lookup: far below the bind-parameter limits


_SQL: dict[tuple, tuple[str, list]] = {}


def insert_rows(conn: Connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert `rows` (tuples of `columns`) into `table` with one executemany of the driver's
    own INSERT, without SQLAlchemy's per-row parameter handling; each value passes the bind processor
    SQLAlchemy's own insert would apply (on SQLite: datetimes to its text form, booleans to
    integers, floats), so the stored values are the same. Bytes skip SQLite's binary processor
    (a memoryview per value): the driver stores bytes as the same BLOB."""
    if not rows:
        return
    dialect = conn.dialect
    key = (dialect.name, table.name, columns)
    entry = _SQL.get(key)
    if entry is None:
        marks = ", ".join(["?" if dialect.paramstyle == "qmark" else "%s"] * len(columns))
        procs = [(i, p) for i, c in enumerate(columns)
                 if (p := table.c[c].type.dialect_impl(dialect).bind_processor(dialect)) is not None
                 and not (dialect.name == "sqlite" and isinstance(table.c[c].type, LargeBinary))]
        entry = _SQL[key] = (f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", procs)
    sql, procs = entry
    if procs:
        fixed = []
        for r in rows:
            r = list(r)
            for i, p in procs:
                v = r[i]
                if v is not None:
                    r[i] = p(v)
            fixed.append(tuple(r))
        rows = fixed
    conn.exec_driver_sql(sql, rows)


def patients_of_stored(conn: Connection, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """For stored resources (type, id): the Patient ids whose compartment holds each one
    (R4 CompartmentDefinition/patient, answered from the reference index). A Patient is
    its own patient; a resource not found (or outside every compartment) maps to []."""
    from ..operations import compartment_ref_condition, patient_compartment

    out: dict[tuple[str, str], list[str]] = {}
    wanted = []
    comp = patient_compartment()
    for t, i in dict.fromkeys(pairs):
        if t == "Patient":
            out[(t, i)] = [i]
        elif t in comp:
            wanted.append((t, i))
    r = resources.c
    ref = idx_reference
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        q = (
            select(r.res_type, r.res_id, ref.c.target_id)
            .select_from(resources.join(ref, ref.c.res_pk == r.pk))
            .where(tuple_(r.res_type, r.res_id).in_(chunk), compartment_ref_condition({t for t, _ in chunk}))
        )
        for res_type, res_id, target in conn.execute(q):
            if target:
                lst = out.setdefault((res_type, res_id), [])
                if target not in lst:
                    lst.append(target)
    return out


def patients_of_resource(res_type: str, resource: dict | None) -> list[str]:
    """The Patient ids a resource in hand belongs to (its compartment parameters' references)."""
    from ..search.membership import patients_of

    return patients_of(res_type, resource)
