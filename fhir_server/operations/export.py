"""FHIR Bulk Data `$export` (HL7 Bulk Data Access IG v2): kick-off, status, files.

URLs (all under the FHIR base, so the generic operation router serves them):

- kick-off:  `GET|POST [base]/$export`, `[base]/Patient/$export`, `[base]/Group/{id}/$export`
  (needs `Prefer: respond-async`), answers 202 with `Content-Location` = status URL;
- status:    `GET [base]/$export-poll-status?_jobId={id}`: 202 + `X-Progress` while
  running, 200 + manifest when done, 500 + OperationOutcome if it failed;
  `DELETE` on the same URL cancels the job and deletes its files;
- files:     `GET [base]/$export-file?_jobId={id}&_file={name}` (application/fhir+ndjson).

The export itself runs in the job worker, never in the request. Every
resource appears once, in its version as of the kick-off (the job's
`transactionTime`): the worker walks the version history, whose rows at or
before that time no later write changes, taking for each resource its latest
version then (deleted ones left out), in (last_updated, pk) keyset order in
batches, so memory stays flat and a resource updated while the export runs is
neither skipped nor written twice. It appends each version's stored JSON as
one NDJSON line to one file per type (split every MAX_LINES_PER_FILE lines),
and checkpoints `(keyset position, byte offset and line count per open file)`
in the job cursor. A job picked up again after a crash truncates its files to
the checkpointed offsets and continues after the checkpointed position, so
no line is written twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import orjson
from sqlalchemy import Connection, String, and_, exists, false, literal, or_, select, true, tuple_, type_coerce
from starlette.responses import Response, StreamingResponse

from ..errors import FhirError, Issue, operation_outcome
from ..jobs import queue
from ..model.definitions import resource_types
from ..rest.context import Outcome
from ..rest.interactions import parse_instant
from ..rest.operations import OperationCall, body_parameters, operation
from .export_access import check_owner, owner_of, restrict_to_caller
from ..storage.schema import idx_reference, job_files, resource_versions, resources
from . import compartment_ref_condition, patient_compartment

log = logging.getLogger("fhir_server.export")

KIND = "export"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"

# Tunables (module level so tests and the benchmark can change them).
BATCH_SIZE = 1000
CHECKPOINT_SECONDS = 2.0
MAX_LINES_PER_FILE = 1_000_000
LEASE_SECONDS = 120
# Up to this many patients are matched in SQL; more are matched per batch in Python.
SQL_PATIENT_LIST_MAX = 2000
RETRY_AFTER_SECONDS = 2

_KNOWN_PARAMS = {"_outputFormat", "_since", "_type", "_typeFilter", "patient"}
# Search result parameters that make no sense inside a _typeFilter.
_FILTER_FORBIDDEN = {"_include", "_revinclude", "_sort", "_count", "_elements", "_summary", "_total", "_contained", "_containedType"}


# ====================================================================== kick-off


def _prefer_async(headers: dict[str, str]) -> bool:
    prefer = headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.replace(";", ",").split(","))




def _patient_id(reference: str) -> str | None:
    """'Patient/123', '[base]/Patient/123' or 'Patient/123/_history/2' -> '123'."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return None


def _group_members(conn: Connection, group_id: str) -> list[str]:
    row = conn.execute(
        select(resources.c.content).where(resources.c.res_type == "Group", resources.c.res_id == group_id, resources.c.deleted == false())
    ).first()
    if row is None or row[0] is None:
        raise FhirError.of(404, "not-found", f"Group/{group_id} is not known")
    group = orjson.loads(bytes(row[0]))
    out: list[str] = []
    seen: set[str] = set()
    for m in group.get("member") or []:
        if not isinstance(m, dict) or m.get("inactive") is True:
            continue
        ref = (m.get("entity") or {}).get("reference")
        pid = _patient_id(ref) if isinstance(ref, str) else None
        if pid and pid not in seen:
            seen.add(pid)
            out.append(pid)
    return out


def _request_url(call: OperationCall) -> str:
    path = call.ctx.base_url
    if call.res_type:
        path += "/" + call.res_type
    if call.res_id:
        path += "/" + call.res_id
    path += "/$export"
    return path + ("?" + urlencode(call.params) if call.params else "")


def _status_url(base: str, job_id: str) -> str:
    return f"{base}/$export-poll-status?_jobId={job_id}"


def _file_url(base: str, job_id: str, name: str) -> str:
    return f"{base}/$export-file?_jobId={job_id}&_file={quote(name)}"


def _not_supported(call: OperationCall, message: str, expression: str | None = None) -> None:
    """Reject, or (Prefer: handling=lenient) ignore, something we cannot honour."""
    if not call.ctx.lenient:
        raise FhirError.of(400, "not-supported", message + " (send Prefer: handling=lenient to have it ignored)", expression)


def _check_type_filter(conn: Connection, res_type: str, query: list[tuple[str, str]]) -> None:
    """Run the filter once so that a bad criterion fails the kick-off, not the job."""
    try:
        from ..search.engine import find_matches
    except ImportError:  # search engine not installed: filters cannot be honoured
        raise FhirError.of(400, "not-supported", "_typeFilter needs the search engine, which is not available") from None
    find_matches(conn, res_type, query, 1)


def kick_off(call: OperationCall) -> Outcome:
    """Validate the request, snapshot what it covers, and queue the job."""
    level = "instance" if call.res_id else "type" if call.res_type else "system"
    if level == "type" and call.res_type != "Patient":
        raise FhirError.of(400, "not-supported", "$export at type level is only defined for Patient")
    if level == "instance" and call.res_type != "Group":
        raise FhirError.of(400, "not-supported", "$export at instance level is only defined for Group")
    if call.method not in ("GET", "POST"):
        raise FhirError.of(405, "not-supported", f"$export does not accept {call.method}")
    if not _prefer_async(call.headers):
        raise FhirError.of(400, "invalid", "$export is asynchronous: send the header 'Prefer: respond-async'")

    pairs: list[tuple[str, str]] = list(call.params) + body_parameters(call)
    types: list[str] = []
    since: datetime | None = None
    raw_filters: list[str] = []
    patients: list[str] | None = None
    for name, value in pairs:
        if name == "_outputFormat":
            if value.strip().lower() not in OUTPUT_FORMATS:
                raise FhirError.of(400, "not-supported", f"_outputFormat '{value}' is not supported: use application/fhir+ndjson", "_outputFormat")
        elif name == "_since":
            since = parse_instant(value.strip(), "_since").astimezone(timezone.utc)
        elif name == "_type":
            types.extend(t.strip() for t in value.split(",") if t.strip())
        elif name == "_typeFilter":
            raw_filters.append(value)
        elif name == "patient":
            if level == "system":
                raise FhirError.of(400, "not-supported", "The patient parameter applies to Patient and Group exports only", "patient")
            pid = _patient_id(value)
            if not pid:
                raise FhirError.of(400, "invalid", f"patient '{value}' is not a Patient reference", "patient")
            patients = (patients or []) + [pid]
        else:
            _not_supported(call, f"Parameter '{name}' is not supported by $export", name)

    # Types: known ones only; patient-level exports cover the Patient compartment.
    compartment = level != "system"
    allowed = set(patient_compartment()) if compartment else set(resource_types())
    known = [t for t in dict.fromkeys(types) if t in allowed]
    for t in dict.fromkeys(types):
        if t not in allowed:
            why = "is not in the Patient compartment" if compartment and t in resource_types() else "is not a supported resource type"
            _not_supported(call, f"_type '{t}' {why}", "_type")
    if types and not known:
        raise FhirError.of(400, "not-supported", "None of the requested _type values can be exported", "_type")
    type_list = known or sorted(allowed)

    # _typeFilter: 'Type?search', OR-ed per type.
    type_filters: dict[str, list[list[tuple[str, str]]]] = {}
    for f in raw_filters:
        t, sep, q = f.partition("?")
        t = t.strip()
        if not sep or t not in allowed:
            raise FhirError.of(400, "invalid", f"_typeFilter '{f}' must be '<ResourceType>?<search>' with an exportable type", "_typeFilter")
        if t not in type_list:
            _not_supported(call, f"_typeFilter '{f}' names a type that is not in _type", "_typeFilter")
            continue
        query = parse_qsl(q, keep_blank_values=True)
        bad = [k for k, _ in query if k.split(":")[0] in _FILTER_FORBIDDEN]
        if bad:
            raise FhirError.of(400, "invalid", f"_typeFilter '{f}' may not use {', '.join(bad)}", "_typeFilter")
        type_filters.setdefault(t, []).append(query)

    type_list, patients = restrict_to_caller(call, level, type_list, patients)
    now = datetime.now(timezone.utc)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as precise as lastUpdated
    with call.db.write() as conn:
        for t, queries in type_filters.items():
            for q in queries:
                _check_type_filter(conn, t, q)
        if level == "instance":
            members = _group_members(conn, call.res_id)
            patients = members if patients is None else [p for p in members if p in set(patients)]
        params = {
            "level": level,
            "group": call.res_id if level == "instance" else None,
            "types": type_list,
            "since": since.isoformat() if since else None,
            "type_filters": type_filters,
            "compartment": compartment,
            "patients": patients,
            "transaction_time": now.isoformat(),
            "request": _request_url(call),
            "owner": owner_of(call),
        }
        job_id = queue.enqueue(conn, KIND, params)
    queue.wakeup.set()
    body = orjson.dumps(operation_outcome([Issue("information", "informational", f"Export job {job_id} accepted; poll the Content-Location URL")]))
    return Outcome(202, body=body, headers={"Content-Location": _status_url(call.ctx.base_url, job_id)})


# One handler, registered per level so each advertises its own definition.
# Access: system and Group exports need a system/ scope (backend services); a Patient-level
# export is open to a patient/ or user/ token too, and then covers that patient's own record.
operation("export", ("system",), definition=DEFINITION, access="system")(kick_off)
operation("export", ("type",), types=("Patient",), definition="http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export")(kick_off)
operation("export", ("instance",), types=("Group",), definition="http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export", access="system")(kick_off)




# ====================================================================== status


def _export_dir(settings, job_id: str) -> Path:
    return Path(settings.export_dir) / job_id


def _fhir_instant(iso: str) -> str:
    dt = datetime.fromisoformat(iso).astimezone(timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _expired(settings, job: queue.Job) -> bool:
    return job.state in (queue.DONE, queue.FAILED) and job.updated < datetime.now(timezone.utc) - timedelta(hours=settings.export_retention_hours)


def _job_id_param(call: OperationCall) -> str:
    ids = [v for k, v in call.params if k == "_jobId"]
    if len(ids) != 1 or not ids[0]:
        raise FhirError.of(400, "invalid", "Give exactly one _jobId", "_jobId")
    return ids[0]


def _load_export(conn: Connection, call: OperationCall, job_id: str) -> queue.Job:
    job = queue.get(conn, job_id)
    if job is None or job.kind != KIND or job.state == queue.CANCELLED or _expired(call.settings, job):
        raise FhirError.of(404, "not-found", f"No export job '{job_id}' (unknown, cancelled or expired)")
    check_owner(call, job)
    return job


def _manifest(call: OperationCall, job: queue.Job, files: list) -> bytes:
    base = call.ctx.base_url
    output = [{"type": f.res_type, "url": _file_url(base, job.id, f.name), "count": f.count} for f in files]
    return orjson.dumps(
        {
            "transactionTime": _fhir_instant(job.params["transaction_time"]),
            "request": job.params["request"],
            "requiresAccessToken": True,
            "output": output,
            "error": [],
        }
    )


@operation("export-poll-status", ("system",), advertise=False, access="authenticated")
def poll_status(call: OperationCall):
    """Bulk Data status endpoint: progress, manifest, failure, or cancellation."""
    job_id = _job_id_param(call)
    if call.method == "DELETE":
        with call.db.write() as conn:
            _load_export(conn, call, job_id)
            queue.cancel(conn, job_id)
            conn.execute(job_files.delete().where(job_files.c.job_id == job_id))
        shutil.rmtree(_export_dir(call.settings, job_id), ignore_errors=True)
        body = orjson.dumps(operation_outcome([Issue("information", "informational", f"Export job {job_id} cancelled; its files are deleted")]))
        return Outcome(202, body=body)
    if call.method != "GET":
        raise FhirError.of(405, "not-supported", f"{call.method} is not supported on the export status URL")
    with call.db.read() as conn:
        job = _load_export(conn, call, job_id)
        files = []
        if job.state == queue.DONE:
            files = conn.execute(
                select(job_files.c.name, job_files.c.res_type, job_files.c.count).where(job_files.c.job_id == job_id).order_by(job_files.c.id)
            ).all()
    if job.state in (queue.QUEUED, queue.RUNNING):
        progress = job.progress or ("queued" if job.state == queue.QUEUED else "running")
        return Outcome(202, headers={"X-Progress": progress[:100], "Retry-After": str(RETRY_AFTER_SECONDS)})
    if job.state == queue.FAILED:
        raise FhirError(500, [Issue("error", "exception", f"Export job {job_id} failed: {job.error or 'unknown error'}")])
    expires = job.updated + timedelta(hours=call.settings.export_retention_hours)
    from email.utils import format_datetime

    return Response(
        content=_manifest(call, job, files),
        status_code=200,
        media_type="application/json",
        headers={"Expires": format_datetime(expires, usegmt=True)},
    )


# ====================================================================== files


def _stream(handle, chunk: int = 256 * 1024):
    try:
        while True:
            data = handle.read(chunk)
            if not data:
                break
            yield data
    finally:
        handle.close()


@operation("export-file", ("system",), advertise=False, access="authenticated")
def export_file(call: OperationCall):
    """Stream one NDJSON output file of a finished export."""
    if call.method != "GET":
        raise FhirError.of(405, "not-supported", "Export files are read with GET")
    job_id = _job_id_param(call)
    names = [v for k, v in call.params if k == "_file"]
    if len(names) != 1:
        raise FhirError.of(400, "invalid", "Give exactly one _file", "_file")
    with call.db.read() as conn:
        job = _load_export(conn, call, job_id)
        row = conn.execute(
            select(job_files.c.path).where(job_files.c.job_id == job_id, job_files.c.name == names[0])
        ).first()
    if job.state != queue.DONE or row is None:
        raise FhirError.of(404, "not-found", f"Export job {job_id} has no file '{names[0]}'")
    try:
        handle = open(row[0], "rb")
    except FileNotFoundError:
        raise FhirError.of(404, "not-found", f"The file '{names[0]}' of export job {job_id} is gone") from None
    size = os.fstat(handle.fileno()).st_size
    return StreamingResponse(_stream(handle), media_type=NDJSON, headers={"Content-Length": str(size)})


# ====================================================================== the job


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


def run_export(jc: queue.JobContext) -> None:
    """The worker side of $export (resumable; see the module docstring)."""
    p = jc.job.params
    out_dir = _export_dir(jc.settings, jc.job.id)
    cursor = _restore(out_dir, jc.job.cursor, jc.job.attempts)
    files = _Files(out_dir, cursor, jc.job.attempts)
    plan = _Plan(p)
    types: list[str] = p["types"]
    filters = {t: [[tuple(x) for x in q] for q in qs] for t, qs in (p.get("type_filters") or {}).items()}
    last_checkpoint = time.monotonic()
    try:
        while cursor["ti"] < len(types):
            res_type = types[cursor["ti"]]
            with jc.db.read() as conn:
                # a cursor from before version-history reads may say "late": that pass is covered
                rows = [] if cursor.get("phase") == "late" else plan.rows(conn, res_type, cursor["after"])
                if not rows:
                    files.finish(res_type)
                    cursor.update(ti=cursor["ti"] + 1, phase="main", after=None)
                    continue
                items = [(row[0], row[1], row[3]) for row in rows]  # pk, id, content
                keep = None
                if plan.big_patient_list:
                    keep = plan.patient_keep(conn, res_type, rows)
                if res_type in filters:
                    matched = _type_filter_keep(conn, res_type, rows, filters[res_type])
                    keep = matched if keep is None else keep & matched
            contents = [c for pk, _, c in items if c is not None and (keep is None or pk in keep)]
            if contents:
                files.write(res_type, _one_line_each(contents))
            last = rows[-1]
            cursor["after"] = [_encode_time(last.last_updated), last.pk]
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
        shutil.rmtree(_export_dir(jc.settings, jc.job.id), ignore_errors=True)


def expire_exports(db, settings) -> None:
    """Delete exports older than the retention period, and cancelled ones' leftovers."""
    before = datetime.now(timezone.utc) - timedelta(hours=settings.export_retention_hours)
    with db.read() as conn:
        ids = queue.finished_before(conn, KIND, before)
    for job_id in ids:
        shutil.rmtree(_export_dir(settings, job_id), ignore_errors=True)
        with db.write() as conn:
            queue.remove(conn, job_id)


queue.register_handler(KIND, run_export, lease_seconds=LEASE_SECONDS)
queue.register_housekeeping("export-expiry", expire_exports)


def setup(settings) -> None:
    """Registration happens at import; make sure the export directory exists."""
    Path(settings.export_dir).mkdir(parents=True, exist_ok=True)
