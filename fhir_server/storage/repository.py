"""Rows in, rows out: the only module that writes the resource tables.

Functions take a SQLAlchemy Connection so that a caller (one REST interaction,
or a whole transaction Bundle) decides the database transaction's extent.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from psycopg import RawCursor
from sqlalchemy import Connection, and_, bindparam, func, select, text, update

from .planner_statistics import count_inserted
from .schema import resource_versions, resources


@dataclass(frozen=True)
class StoredResource:
    pk: int
    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: bytes | None


_COLS = (
    resources.c.pk,
    resources.c.res_type,
    resources.c.res_id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
)


# Built once: SQLAlchemy then reuses their compiled form on every write.
_INSERT_RESOURCE = resources.insert().returning(resources.c.pk)
_READ_CURRENT = select(*_COLS).where(resources.c.res_type == bindparam("t"), resources.c.res_id == bindparam("i"))
_READ_CURRENT_FOR_UPDATE = _READ_CURRENT.with_for_update()
_UPDATE_RESOURCE = update(resources).where(resources.c.pk == bindparam("b_pk"))


def stored_from_row(r) -> StoredResource:
    """(pk, res_type, res_id, version_id, last_updated, deleted, content) as a StoredResource, in UTC."""
    return StoredResource(r[0], r[1], r[2], r[3], _utc(r[4]), bool(r[5]), _bytes(r[6]))


def _bytes(v) -> bytes | None:
    return bytes(v) if v is not None else None


def _utc(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    from datetime import timezone

    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def read_current(conn: Connection, res_type: str, res_id: str, for_update: bool = False) -> StoredResource | None:
    flush(conn)
    stmt = _READ_CURRENT_FOR_UPDATE if for_update and conn.dialect.name == "postgresql" else _READ_CURRENT
    r = conn.execute(stmt, {"t": res_type, "i": res_id}).first()
    return stored_from_row(r) if r else None


def read_by_pks(conn: Connection, pks: list[int]) -> list[StoredResource]:
    flush(conn)
    out: list[StoredResource] = []
    for i in range(0, len(pks), 500):
        chunk = pks[i : i + 500]
        out.extend(stored_from_row(r) for r in conn.execute(select(*_COLS).where(resources.c.pk.in_(chunk))))
    return out


def read_version(conn: Connection, res_type: str, res_id: str, version_id: int):
    flush(conn)
    v = resource_versions.c
    r = conn.execute(
        select(v.res_pk, v.res_type, v.res_id, v.version_id, v.last_updated, v.deleted, v.content).where(
            v.res_type == res_type, v.res_id == res_id, v.version_id == version_id
        )
    ).first()
    return stored_from_row(r) if r else None


def replace_current_content(conn: Connection, stored: StoredResource, content: bytes) -> None:
    """Change the content of the current version in place, keeping its versionId and
    lastUpdated (only $meta-add / $meta-delete do this: meta changes make no new version)."""
    flush(conn)
    conn.execute(_UPDATE_RESOURCE, {"b_pk": stored.pk, "version_id": stored.version_id, "last_updated": stored.last_updated,
                                    "deleted": False, "content": content})
    v = resource_versions.c
    conn.execute(update(resource_versions).where(v.res_pk == stored.pk, v.version_id == stored.version_id).values(content=content))


def insert_resource(
    conn: Connection, res_type: str, res_id: str, version_id: int, last_updated: datetime, content: bytes, method: str
) -> int:
    """Insert a brand-new logical resource with its first version; returns pk.

    On PostgreSQL inside Database.write the key is taken from a block of
    pre-allocated sequence values and the row is buffered like the rest, so a
    transaction Bundle does not pay one round trip per resource."""
    if conn.info.get(_BUFFERING) and conn.dialect.name == "postgresql":
        pk = _allocate_pk(conn)
        row = {"pk": pk, "res_type": res_type, "res_id": res_id, "version_id": version_id,
               "last_updated": last_updated, "deleted": False, "content": content}
        buffer_rows(conn, resources, [row])
        _insert_version(conn, pk, res_type, res_id, version_id, last_updated, content, method, False)
        return pk
    if SQLITE_DRIVER_FLUSH and conn.dialect.name == "sqlite":
        pk = _sqlite_insert_returning_pk(conn, {"res_type": res_type, "res_id": res_id, "version_id": version_id,
                                                "last_updated": last_updated, "deleted": False, "content": content})
        if pk is not None:
            _insert_version(conn, pk, res_type, res_id, version_id, last_updated, content, method, False)
            return pk
    pk = conn.execute(
        _INSERT_RESOURCE,
        {
            "res_type": res_type,
            "res_id": res_id,
            "version_id": version_id,
            "last_updated": last_updated,
            "deleted": False,
            "content": content,
        },
    ).scalar_one()
    _insert_version(conn, pk, res_type, res_id, version_id, last_updated, content, method, False)
    return pk


def write_version(
    conn: Connection,
    pk: int,
    res_type: str,
    res_id: str,
    version_id: int,
    last_updated: datetime,
    content: bytes | None,
    method: str,
) -> None:
    """Make `version_id` the current version (content None = deletion tombstone)."""
    deleted = content is None
    conn.execute(
        _UPDATE_RESOURCE,
        {"b_pk": pk, "version_id": version_id, "last_updated": last_updated, "deleted": deleted, "content": content},
    )
    _insert_version(conn, pk, res_type, res_id, version_id, last_updated, content, method, deleted)


def _insert_version(conn, pk, res_type, res_id, version_id, last_updated, content, method, deleted) -> None:
    buffer_rows(
        conn,
        resource_versions,
        [{
            "res_pk": pk,
            "res_type": res_type,
            "res_id": res_id,
            "version_id": version_id,
            "last_updated": last_updated,
            "method": method,
            "deleted": deleted,
            "content": content,
        }],
    )


# ----------------------------------------------------------------------------- write buffer
#
# Version rows and search-index rows are not needed until something reads them,
# so a write transaction collects them and inserts each table's rows in one
# multi-row statement: a transaction Bundle of 300 resources then costs a handful
# of round trips instead of thousands. `flush` runs before every read of those
# tables inside the transaction and before commit (Database.write).

_BUFFER_KEY = "fhir_write_buffer"
_BUFFERING = "fhir_buffering"


def start_buffering(conn: Connection) -> None:
    conn.info[_BUFFERING] = True


def buffer_rows(conn: Connection, table, rows: list[dict]) -> None:
    """Insert rows now, or at flush time on a connection that opted in (Database.write)."""
    if not rows:
        return
    if not conn.info.get(_BUFFERING):
        conn.execute(table.insert(), rows)
        return
    buf = conn.info.setdefault(_BUFFER_KEY, {})
    buf.setdefault(table, []).extend(rows)


def flush(conn: Connection) -> None:
    """Insert everything buffered on this connection (idempotent, cheap when empty)."""
    buf = conn.info.get(_BUFFER_KEY)
    if not buf:
        return
    conn.info[_BUFFER_KEY] = {}
    # resources first, then versions (their foreign key points at resources), then index rows
    tables = sorted(buf, key=lambda t: {"resources": 0, "resource_versions": 1}.get(t.name, 2))
    if conn.dialect.name == "postgresql":
        _flush_postgres(conn, [(t, buf[t]) for t in tables])
        return
    if SQLITE_DRIVER_FLUSH and conn.dialect.name == "sqlite":
        _flush_sqlite(conn, [(t, buf[t]) for t in tables])
        return
    for table in tables:
        rows = buf[table]
        for i in range(0, len(rows), 1000):
            conn.execute(table.insert(), rows[i : i + 1000])


# SQLite: buffered rows go to the driver's executemany directly (and a new resource's row
# to the driver's INSERT ... RETURNING), converted by the same bind processors SQLAlchemy's
# INSERT applies (dates as its text form, booleans as 0/1), which spares SQLAlchemy's
# per-statement and per-row work (a tenth of a create's CPU). False: through SQLAlchemy
# (the tests compare the two).
SQLITE_DRIVER_FLUSH = True

_SQLITE_INSERTS: dict[tuple, tuple | None] = {}


def _flush_sqlite(conn: Connection, work: list[tuple]) -> None:
    """Each (table, rows) of `work` as one executemany per column set, rows in order."""
    cur = None
    try:
        for table, rows in work:
            by_keys: dict[tuple, list[dict]] = {}
            for r in rows:
                by_keys.setdefault(tuple(r), []).append(r)
            for keys, group in by_keys.items():
                plan = _sqlite_insert(conn, table, keys)
                if plan is None:  # a column default SQLAlchemy fills in: its INSERT does it
                    conn.execute(table.insert(), group)
                    continue
                sql, procs = plan
                values = [tuple(v if p is None or v is None else p(v) for p, v in zip(procs, r.values())) for r in group]
                if cur is None:
                    cur = conn.connection.dbapi_connection.cursor()
                try:
                    cur.executemany(sql, values)
                except sqlite3.Error as exc:
                    raise _as_sqlalchemy_error(conn, sql, values, exc, True) from exc
    finally:
        if cur is not None:
            cur.close()


def _sqlite_insert_returning_pk(conn: Connection, row: dict) -> int | None:
    """SQLite: insert one resources row through the driver (as `_INSERT_RESOURCE` does,
    same bind processors); returns its pk (None: nothing done, SQLAlchemy's INSERT must)."""
    plan = _sqlite_insert(conn, resources, tuple(row))
    if plan is None:
        return None
    sql, procs = plan
    cur = conn.connection.dbapi_connection.cursor()
    params = tuple(v if p is None or v is None else p(v) for p, v in zip(procs, row.values()))
    try:
        cur.execute(sql + " RETURNING pk", params)
        return cur.fetchone()[0]
    except sqlite3.Error as exc:
        raise _as_sqlalchemy_error(conn, sql, params, exc, False) from exc
    finally:
        cur.close()


def _as_sqlalchemy_error(conn: Connection, sql: str, params, exc: Exception, many: bool) -> Exception:
    """The driver's error wrapped as SQLAlchemy wraps it (IntegrityError, DataError, ...), so
    callers catching SQLAlchemy's classes (audit.writer) see what its INSERT raised."""
    from sqlalchemy.exc import DBAPIError

    return DBAPIError.instance(sql, params, exc, sqlite3.Error, dialect=conn.dialect, ismulti=many)


def _sqlite_insert(conn: Connection, table, keys: tuple) -> tuple | None:
    """(INSERT statement, bind processor per column) for `keys` of `table`; None when a
    column left out has a default SQLAlchemy would supply (then its INSERT is used)."""
    key = (table.name, keys)
    if key in _SQLITE_INSERTS:
        return _SQLITE_INSERTS[key]
    plan = None
    if not any(c.default is not None and c.name not in keys for c in table.columns):
        dialect = conn.dialect
        procs = tuple(table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in keys)
        sql = f"INSERT INTO {table.name} ({', '.join(keys)}) VALUES ({', '.join('?' for _ in keys)})"
        plan = (sql, procs)
    _SQLITE_INSERTS[key] = plan
    return plan


_PK_POOL = "fhir_pk_pool"
PK_BLOCK = 200


def _allocate_pk(conn: Connection) -> int:
    """A resources.pk from a block of sequence values held by this connection
    (gaps are harmless: keys need only be unique and increasing)."""
    pool = conn.info.setdefault(_PK_POOL, [])
    if not pool:
        values = conn.execute(
            text("SELECT nextval(pg_get_serial_sequence('resources', 'pk')) FROM generate_series(1, :n)"), {"n": PK_BLOCK}
        ).scalars().all()
        pool.extend(sorted(values, reverse=True))
    return pool.pop()


# From this many buffered rows on, COPY beats one multi-row INSERT statement.
COPY_THRESHOLD = 200


def copy_rows(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple], binary_types: list[str] | None = None) -> None:
    """PostgreSQL: `rows` (tuples of `columns`) into `table` by COPY, inside `conn`'s transaction.
    `binary_types` (`binary_copy_types`): COPY's binary format, for rows whose every value is
    already of its column's Python type (str for text, int, aware datetime, bytes): nothing
    is formatted as text and parsed back (the access log's rows, bench/bench_audit_copy.py:
    the client's CPU for COPY about halved, PostgreSQL's a few per cent less)."""
    fmt = " (FORMAT BINARY)" if binary_types else ""
    with conn.connection.dbapi_connection.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{fmt}") as copy:
            if binary_types:
                copy.set_types(binary_types)
            write = copy.write_row
            for row in rows:
                write(row)


_BINARY_TYPE = {"String": "text", "Text": "text", "BigInteger": "int8", "Integer": "int4", "DateTime": "timestamptz",
                "LargeBinary": "bytea", "Float": "float8", "Boolean": "bool"}


def binary_copy_types(table, columns: tuple[str, ...]) -> list[str]:
    """The PostgreSQL type names of `columns` of the SQLAlchemy `table`, for `copy_rows`'s binary format."""
    return [_BINARY_TYPE[type(table.c[c].type).__name__] for c in columns]


def _flush_postgres(conn: Connection, work: list[tuple]) -> None:
    """PostgreSQL: every buffered table's rows in one statement, so the whole
    flush costs a single network round trip; large flushes (a transaction
    Bundle) stream each table with COPY instead."""
    raw = conn.connection.dbapi_connection
    count_inserted(conn, [(table.name, len(rows)) for table, rows in work])
    if sum(len(rows) for _t, rows in work) >= COPY_THRESHOLD:
        for table, rows in work:
            by_keys: dict[tuple, list[tuple]] = {}
            for r in rows:
                by_keys.setdefault(tuple(r), []).append(tuple(r.values()))
            for keys, group in by_keys.items():
                copy_rows(conn, table.name, keys, group)
        return
    # One multi-row INSERT per table and column set, chained as data-modifying
    # CTEs into a single statement. Measured against the alternatives on a
    # single-resource create: psycopg's executemany sends (and dumps, in Python)
    # a statement per row, and even one statement per table in a pipeline costs
    # more client CPU than the rest of the create. A RawCursor takes `$n`
    # placeholders as they are; the default cursor would re-parse the long text.
    # psycopg prepares a text on its fifth use on a connection (prepare_threshold):
    # a create of a known shape is then planned once, not per create
    # (bench_create_cpu, PostgreSQL: 2.0 -> 1.5 ms of the database's CPU per create).
    shape: list[tuple] = []
    params: list = []
    for table, rows in work:
        by_keys: dict[tuple, list] = {}
        for r in rows:
            by_keys.setdefault(tuple(r), []).extend(r.values())
        for keys, values in by_keys.items():
            shape.append((table.name, keys, len(values) // len(keys)))
            params.extend(values)
    with RawCursor(raw) as cur:
        cur.execute(_combined_insert_sql(tuple(shape)), params)


_SQL_CACHE: dict[tuple, str] = {}


def _combined_insert_sql(shape: tuple) -> str:
    """`INSERT ... VALUES` for each (table, columns, row count), numbered on from
    one another and joined as `WITH w0 AS (INSERT ...), ... INSERT ...`."""
    sql = _SQL_CACHE.get(shape)
    if sql is None:
        inserts = []
        n = 0
        for table, keys, n_rows in shape:
            width = len(keys)
            rows = ",".join("(" + ",".join(f"${n + r * width + c + 1}" for c in range(width)) + ")" for r in range(n_rows))
            inserts.append(f"INSERT INTO {table} ({', '.join(keys)}) VALUES {rows}")
            n += width * n_rows
        *first, last = inserts
        sql = ("WITH " + ", ".join(f"w{i} AS ({q})" for i, q in enumerate(first)) + " " if first else "") + last
        if len(_SQL_CACHE) < 4096:
            _SQL_CACHE[shape] = sql
    return sql


def discard_buffer(conn: Connection) -> None:
    """Forget buffered rows and stop buffering (the connection goes back to the pool)."""
    conn.info.pop(_BUFFER_KEY, None)
    conn.info.pop(_BUFFERING, None)


def history_rows(
    conn: Connection,
    res_type: str | None,
    res_id: str | None,
    since: datetime | None,
    at: list[tuple[str, datetime | None, datetime | None]] | None,
    before_seq: int | None,
    limit: int,
    visible_pks=None,
):
    """Versions newest first; keyset-paged on the global sequence number.

    `at` holds (prefix, low, high) periods (UTC, half-open [low, high), None for an
    open end): a version is kept when the time it was current -- from its
    lastUpdated to the next version's -- meets each period as the prefix asks
    (http.html#history `_at`, search.html#prefix).
    `visible_pks`: a subquery of resource pks the caller may see (None: all)."""
    flush(conn)
    v = resource_versions.c
    stmt = select(v.seq, v.res_type, v.res_id, v.version_id, v.last_updated, v.method, v.deleted, v.content)
    conds = [] if visible_pks is None else [v.res_pk.in_(visible_pks)]
    if res_type:
        conds.append(v.res_type == res_type)
    if res_id:
        conds.append(v.res_id == res_id)
    if since:
        conds.append(v.last_updated >= since)
    if before_seq is not None:
        conds.append(v.seq < before_seq)
    if at:
        nxt = resource_versions.alias("next_version")
        stmt = stmt.outerjoin(nxt, and_(nxt.c.res_type == v.res_type, nxt.c.res_id == v.res_id, nxt.c.version_id == v.version_id + 1))
        for prefix, low, high in at:
            conds.append(_current_during(prefix, low, high, v.last_updated, nxt.c.last_updated))
    if conds:
        stmt = stmt.where(*conds)
    return conn.execute(stmt.order_by(v.seq.desc()).limit(limit)).all()


def _current_during(prefix: str, low, high, start, end):
    """A version current over [start, end) (end NULL: still current) against the
    period [low, high) under a search prefix."""
    from sqlalchemy import false, not_, or_, true

    def ends_after(x):  # the version is still current after instant x
        return true() if x is None else or_(end.is_(None), end > x)

    def starts_before(x):  # the version became current before instant x
        return true() if x is None else start < x

    if prefix in ("eq", "ap"):  # current at some point during the period
        return and_(starts_before(high), ends_after(low))
    if prefix == "ne":  # not current at any point during the period
        return not_(and_(starts_before(high), ends_after(low)))
    if prefix == "gt":  # current at some point after the period
        return ends_after(high) if high is not None else false()
    if prefix == "ge":
        return ends_after(low)
    if prefix == "lt":  # current at some point before the period
        return starts_before(low) if low is not None else false()
    if prefix == "le":
        return starts_before(high)
    if prefix == "sa":  # became current after the period ended
        return start >= high if high is not None else false()
    if prefix == "eb":  # stopped being current before the period began
        return and_(end.is_not(None), end <= low) if low is not None else false()
    raise ValueError(prefix)


def count_history(conn: Connection, res_type: str | None, res_id: str | None, since: datetime | None, visible_pks=None) -> int:
    flush(conn)
    v = resource_versions.c
    stmt = select(func.count()).select_from(resource_versions)
    if visible_pks is not None:
        stmt = stmt.where(v.res_pk.in_(visible_pks))
    if res_type:
        stmt = stmt.where(v.res_type == res_type)
    if res_id:
        stmt = stmt.where(v.res_id == res_id)
    if since:
        stmt = stmt.where(v.last_updated >= since)
    return conn.execute(stmt).scalar_one()


def _lock_id(parts: tuple[str, ...]) -> int:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_keys(conn: Connection, keys: list[tuple[str, ...]]) -> None:
    """Take several lock_key locks in one canonical order (ascending lock id) and one
    round trip, so that writers locking overlapping sets never wait on each other in a
    cycle. No-op on SQLite (one writer at a time)."""
    if conn.dialect.name != "postgresql" or not keys:
        return
    ids = sorted({_lock_id(k) for k in keys})
    conn.execute(text("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(CAST(:ids AS bigint[])) AS k ORDER BY k) AS s"),
                 {"ids": ids})


def lock_key(conn: Connection, *parts: str) -> None:
    """Serialise concurrent writers that share a logical key (conditional create,
    national identity). PostgreSQL: a transaction-scoped advisory lock. SQLite:
    writers already hold the database's write lock (BEGIN IMMEDIATE)."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_id(parts)})
