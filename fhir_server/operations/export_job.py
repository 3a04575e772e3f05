"""The worker side of `$export`: runs each export job from the jobs table.

Every resource appears once, in its version as of the kick-off (the job's
`transactionTime`): the worker walks the version history, whose rows at or
before that time no later write changes, taking for each resource its latest
version then (deleted ones left out), in (last_updated, pk) keyset order in
batches, so memory stays flat and a resource updated while the export runs is
neither skipped nor written twice. It appends each version's stored JSON as
one NDJSON line to one file per type (split every MAX_LINES_PER_FILE lines),
and checkpoints `(keyset position, byte offset and line count per open file)`
in the job cursor. A job picked up again after a crash truncates its files to
the checkpointed offsets and continues after the checkpointed position, so
no line is written twice. The HTTP side (kick-off, status, files) is export.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, String, and_, exists, false, literal, or_, select, true, tuple_, type_coerce

from ..audit import log_links
from ..audit.log import AUDIT_TYPE
from ..jobs import queue
from ..storage.schema import idx_reference, job_files, resource_versions
from . import compartment_ref_condition

log = logging.getLogger("fhir_server.export")

KIND = "export"
NDJSON = "application/fhir+ndjson"
# Tunables (module level so tests and the benchmark can change them).
BATCH_SIZE = 1000
CHECKPOINT_SECONDS = 2.0
MAX_LINES_PER_FILE = 1_000_000
LEASE_SECONDS = 120
# Up to this many patients are matched in SQL; more are matched per batch in Python.
SQL_PATIENT_LIST_MAX = 2000


def export_dir(settings, job_id: str) -> Path:
    """Where the NDJSON files of one export job live."""
    return Path(settings.export_dir) / job_id

class _Files:
    """The open NDJSON files of a job, mirrored in the cursor (offsets, counts)."""

    def __init__(self, out_dir: Path, cursor: dict, attempt: int):
        self.dir = out_dir
        self.cursor = cursor
        self.attempt = attempt
        self.handles: dict[str, Any] = {}

    def write(self, res_type: str, contents: list[bytes]) -> None:
        """Append resources (one line each), starting a new part file when full."""
        while contents:
            entry = self.cursor["open"].get(res_type)
            if entry is None:
                part = self.cursor["parts"].get(res_type, 0) + 1
                self.cursor["parts"][res_type] = part
                entry = {"name": f"{res_type}-{part}.ndjson", "file": _disk_name(res_type, part, self.attempt), "offset": 0, "count": 0}
                self.cursor["open"][res_type] = entry
            handle = self.handles.get(res_type)
            if handle is None:
                handle = self.handles[res_type] = open(self.dir / entry["file"], "ab")
            room = MAX_LINES_PER_FILE - entry["count"]
            chunk, contents = contents[:room], contents[room:]
            blob = b"\n".join(chunk) + b"\n"
            handle.write(blob)
            entry["offset"] += len(blob)
            entry["count"] += len(chunk)
            self.cursor["total"] += len(chunk)
            if entry["count"] >= MAX_LINES_PER_FILE:
                self._close(res_type)

    def _close(self, res_type: str) -> None:
        handle = self.handles.pop(res_type, None)
        if handle is not None:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        entry = self.cursor["open"].pop(res_type)
        self.cursor["closed"].append({"type": res_type, **entry})

    def sync(self) -> None:
        """Make every byte counted in the cursor durable before the cursor is saved."""
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self, res_type: str) -> None:
        if res_type in self.cursor["open"]:
            self._close(res_type)

    def close_all(self) -> None:
        for res_type in list(self.cursor["open"]):
            self._close(res_type)

    def abandon(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


def _fresh_cursor() -> dict:
    # ti: index in the job's type list; after: keyset position (last_updated, pk)
    # within the type. ("phase" is kept for cursors written by earlier releases,
    # which read changed rows in a second, "late" pass.)
    return {"ti": 0, "phase": "main", "after": None, "total": 0, "open": {}, "closed": [], "parts": {}}


def _disk_name(res_type: str, part: int, attempt: int) -> str:
    """On disk a file also carries the attempt that wrote it: a worker that lost
    its lease but still runs can then only ever touch its own files."""
    return f"{res_type}-{part}.a{attempt}.ndjson"


def _restore(out_dir: Path, cursor: dict | None, attempt: int) -> dict:
    """Bring the directory back to the checkpoint. Finished files are kept; each
    file that was open is copied up to its checkpointed offset into a file of
    this attempt (so lines written after the checkpoint vanish, and a stale
    worker still appending to the old file changes nothing); anything else is
    removed. If the disk lost data the checkpoint counts on, start over."""
    if cursor is None:
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        return _fresh_cursor()
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in cursor["closed"] + list(cursor["open"].values()):
        path = out_dir / entry["file"]
        if not path.exists() or path.stat().st_size < entry["offset"]:
            log.warning("export %s: %s is shorter than its checkpoint; restarting the export", out_dir.name, entry["file"])
            return _restore(out_dir, None, attempt)
    for res_type, entry in cursor["open"].items():
        old = out_dir / entry["file"]
        new_name = _disk_name(res_type, cursor["parts"][res_type], attempt)
        if new_name != entry["file"]:
            with open(old, "rb") as src, open(out_dir / new_name, "wb") as dst:
                remaining = entry["offset"]
                while remaining:
                    data = src.read(min(remaining, 1 << 20))
                    dst.write(data)
                    remaining -= len(data)
                dst.flush()
                os.fsync(dst.fileno())
            entry["file"] = new_name
        else:
            os.truncate(old, entry["offset"])
    keep = {e["file"] for e in cursor["closed"]} | {e["file"] for e in cursor["open"].values()}
    for path in out_dir.iterdir():
        if path.name not in keep:
            path.unlink()
    return cursor


class _Plan:
    """The SQL side of one export job: which rows, in which order."""

    def __init__(self, p: dict):
        self.p = p
        self.tx = datetime.fromisoformat(p["transaction_time"])
        self.since = datetime.fromisoformat(p["since"]) if p["since"] else None
        self.types = set(p["types"])
        patients = p["patients"] if p["compartment"] else None
        self.big_patient_list = patients is not None and len(patients) > SQL_PATIENT_LIST_MAX
        self.patient_set = set(patients) if self.big_patient_list else None

    def rows(self, conn: Connection, res_type: str, after: list | None) -> list:
        """One batch of a type: each resource's version as of the transaction
        time (its latest version at or before it, unless that is a deletion),
        read from the version history, which writes after the transaction time
        never change. Keyset-ordered by (last_updated, pk), so a resource
        updated while the export runs is neither skipped nor exported twice."""
        v = resource_versions.c
        later = resource_versions.alias("later")
        conds = [
            v.res_type == res_type,
            v.last_updated <= self.tx,
            v.deleted == false(),
            ~exists().where(later.c.res_pk == v.res_pk, later.c.version_id > v.version_id, later.c.last_updated <= self.tx),
        ]
        if self.since is not None:
            conds.append(v.last_updated >= self.since)
        time_col = _time_column(conn.dialect.name)
        if after is not None:
            raw, pk = after
            if raw.startswith("dt:"):
                conds.append(tuple_(v.last_updated, v.res_pk) > tuple_(datetime.fromisoformat(raw[3:]), pk))
            else:  # SQLite: compare the stored text as text
                conds.append(tuple_(type_coerce(v.last_updated, String()), v.res_pk) > tuple_(literal(raw, String()), pk))
        if self.p["compartment"]:
            conds.append(self._compartment(res_type, v.res_pk, v.res_id))
        stmt = (select(v.res_pk.label("pk"), v.res_id, time_col, v.content)
                .where(*conds).order_by(v.last_updated, v.res_pk).limit(BATCH_SIZE))
        return conn.execute(stmt).all()

    def _compartment(self, res_type: str, pk_col, id_col):
        patients = self.p["patients"]
        if patients is not None and not patients:
            return false()
        ref = idx_reference.alias("ref")
        linked = and_(ref.c.res_pk == pk_col, compartment_ref_condition({res_type}, ref))
        is_patient = res_type == "Patient"
        if patients is not None and not self.big_patient_list:
            linked = and_(linked, ref.c.target_id.in_(patients))
            return or_(id_col.in_(patients), exists().where(linked)) if is_patient else exists().where(linked)
        return true() if is_patient else exists().where(linked)

    def patient_keep(self, conn: Connection, res_type: str, rows: list) -> set[int]:
        """For large patient lists: the pks of rows that belong to one of them."""
        patients = self.patient_set
        keep = {row.pk for row in rows if res_type == "Patient" and row.res_id in patients}
        ref = idx_reference.alias("ref")
        for res_pk, target_id in conn.execute(
            select(ref.c.res_pk, ref.c.target_id).where(ref.c.res_pk.in_([row.pk for row in rows]), compartment_ref_condition({res_type}, ref))
        ):
            if target_id in patients:
                keep.add(res_pk)
        return keep


def _one_line_each(contents: list[bytes]) -> list[bytes]:
    """Stored JSON is compact, but NDJSON breaks if one ever holds a raw newline:
    check the whole batch in one pass, re-serialise only if needed."""
    contents = [bytes(c) for c in contents]
    joined = b"".join(contents)
    if b"\n" not in joined and b"\r" not in joined:
        return contents
    return [orjson.dumps(orjson.loads(c)) if (b"\n" in c or b"\r" in c) else c for c in contents]


def _time_column(dialect: str):
    """last_updated as the keyset needs it. SQLite stores text: keep it raw (no
    per-row datetime parsing, exact round trip); PostgreSQL returns datetimes."""
    col = resource_versions.c.last_updated
    return type_coerce(col, String()).label("last_updated") if dialect == "sqlite" else col.label("last_updated")


def _encode_time(value) -> str:
    """Cursor form of a keyset time: raw SQLite text, or "dt:" + ISO datetime."""
    return value if isinstance(value, str) else "dt:" + value.isoformat()


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


def _type_filter_keep(conn: Connection, res_type: str, rows: list, queries: list) -> set[int]:
    """pks of the rows matching one of the type's filters; the search is limited
    to this batch's ids, so it costs one query per batch and filter."""
    from ..search.engine import find_matches

    ids = ",".join(row.res_id for row in rows)
    keep: set[int] = set()
    for query in queries:
        keep.update(pk for pk, _ in find_matches(conn, res_type, list(query) + [("_id", ids)], len(rows) + 1))
    return keep


def _condition_keep(conn: Connection, res_type: str, rows: list, names: list[str]) -> set[int]:
    """pks of the batch's rows that satisfy the named access rules (search.access.NAMED_CONDITIONS)."""
    from sqlalchemy import and_, select

    from ..search.access import named_condition
    from ..storage.schema import resources as r

    cond = and_(*(named_condition(n, res_type, r) for n in names))
    return {pk for (pk,) in conn.execute(select(r.c.pk).where(r.c.pk.in_([row[0] for row in rows]), cond))}


def _resource_batch(conn: Connection, plan: _Plan, res_type: str, cursor: dict, filters: dict, scope_filters: dict,
                    conditions: dict) -> tuple[list[bytes], list | None]:
    """One batch of a type's resources: (their contents that pass the filters, the keyset
    position after the batch, or None when the type is done)."""
    # a cursor from before version-history reads may say "late": that pass is covered
    rows = [] if cursor.get("phase") == "late" else plan.rows(conn, res_type, cursor["after"])
    if not rows:
        return [], None
    items = [(row[0], row[1], row[3]) for row in rows]  # pk, id, content
    keep = None
    if plan.big_patient_list:
        keep = plan.patient_keep(conn, res_type, rows)
    for limits in (filters, scope_filters):
        if res_type in limits:
            matched = _type_filter_keep(conn, res_type, rows, limits[res_type])
            keep = matched if keep is None else keep & matched
    if res_type in conditions:
        matched = _condition_keep(conn, res_type, rows, conditions[res_type])
        keep = matched if keep is None else keep & matched
    contents = [c for pk, _, c in items if c is not None and (keep is None or pk in keep)]
    last = rows[-1]
    return contents, [_encode_time(last.last_updated), last.pk]


def run_export(jc: queue.JobContext) -> None:
    """The worker side of $export (resumable; see the module docstring)."""
    p = jc.job.params
    out_dir = export_dir(jc.settings, jc.job.id)
    cursor = _restore(out_dir, jc.job.cursor, jc.job.attempts)
    files = _Files(out_dir, cursor, jc.job.attempts)
    plan = _Plan(p)
    types: list[str] = p["types"]
    filters = {t: [[tuple(x) for x in q] for q in qs] for t, qs in (p.get("type_filters") or {}).items()}
    # the caller's granular scopes (one of the queries must match), AND-ed with _typeFilter
    scope_filters = {t: [[tuple(x) for x in q] for q in qs] for t, qs in (p.get("scope_filters") or {}).items()}
    conditions: dict[str, list[str]] = p.get("access_conditions") or {}  # named access rules, checked now
    last_checkpoint = time.monotonic()
    try:
        while cursor["ti"] < len(types):
            res_type = types[cursor["ti"]]
            with jc.db.read() as conn:
                if res_type == AUDIT_TYPE:  # the access log (audit.log_links), in the order of its own keys
                    last_pk, contents = log_links.export_batch(conn, p, cursor["after"], BATCH_SIZE, SQL_PATIENT_LIST_MAX)
                    after = None if last_pk is None else ["log", last_pk]
                else:
                    contents, after = _resource_batch(conn, plan, res_type, cursor, filters, scope_filters, conditions)
            if after is None:
                files.finish(res_type)
                cursor.update(ti=cursor["ti"] + 1, phase="main", after=None)
                continue
            if contents:
                files.write(res_type, _one_line_each(contents))
            cursor["after"] = after
            if time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS:
                files.sync()
                jc.checkpoint(cursor, f"{cursor['ti']}/{len(types)} types, {cursor['total']} resources")
                last_checkpoint = time.monotonic()
        files.close_all()
    except queue.JobInterrupted:
        files.abandon()
        _cleanup_if_cancelled(jc)
        raise
    except BaseException:
        files.abandon()
        raise

    outputs = [e for e in cursor["closed"] if e["count"] > 0]

    def record(conn: Connection) -> None:
        if outputs:
            conn.execute(
                job_files.insert(),
                [{"job_id": jc.job.id, "name": e["name"], "res_type": e["type"], "count": e["count"], "path": str(out_dir / e["file"])} for e in outputs],
            )

    try:
        jc.complete({"files": len(outputs), "resources": cursor["total"]}, within=record)
    except queue.JobInterrupted:
        _cleanup_if_cancelled(jc)
        raise


def _cleanup_if_cancelled(jc: queue.JobContext) -> None:
    """Delete the files of a cancelled job (but not of one another worker now owns)."""
    with jc.db.read() as conn:
        job = queue.get(conn, jc.job.id)
    if job is None or job.state == queue.CANCELLED:
        shutil.rmtree(export_dir(jc.settings, jc.job.id), ignore_errors=True)


def expire_exports(db, settings) -> None:
    """Delete exports older than the retention period, and cancelled ones' leftovers."""
    before = datetime.now(timezone.utc) - timedelta(hours=settings.export_retention_hours)
    with db.read() as conn:
        ids = queue.finished_before(conn, KIND, before)
    for job_id in ids:
        shutil.rmtree(export_dir(settings, job_id), ignore_errors=True)
        with db.write() as conn:
            queue.remove(conn, job_id)


queue.register_handler(KIND, run_export, lease_seconds=LEASE_SECONDS)
queue.register_housekeeping("export-expiry", expire_exports)
