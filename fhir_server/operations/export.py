"""FHIR Bulk Data `$export` (HL7 Bulk Data Access IG v2): kick-off, status, files.

URLs (all under the FHIR base, so the generic operation router serves them):

- kick-off:  `GET|POST [base]/$export`, `[base]/Patient/$export`, `[base]/Group/{id}/$export`
  (needs `Prefer: respond-async`), answers 202 with `Content-Location` = status URL;
- status:    `GET [base]/$export-poll-status?_jobId={id}`: 202 + `X-Progress` while
  running, 200 + manifest when done, 500 + OperationOutcome if it failed;
  `DELETE` on the same URL cancels the job and deletes its files;
- files:     `GET [base]/$export-file?_jobId={id}&_file={name}` (application/fhir+ndjson).

The export itself runs in the job worker, never in the request: export_job.py
(each resource once, in its version as of the kick-off; resumable after a crash).
"""
from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

import orjson
from sqlalchemy import Connection, false, select
from starlette.responses import Response, StreamingResponse

from ..errors import FhirError, Issue, operation_outcome
from ..jobs import queue
from ..model.definitions import resource_types
from ..rest.context import Outcome
from ..rest.interactions import parse_instant
from ..rest.operations import OperationCall, body_parameters, operation
from ..storage.schema import job_files, resources
from . import patient_compartment
from .export_access import access_conditions, acting_filters, check_owner, owner_of, restrict_to_caller
from .export_job import KIND, NDJSON, export_dir

log = logging.getLogger("fhir_server.export")

OUTPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"

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
    if res_type == "AuditEvent":  # the access log's own parameters (audit.log_links)
        from ..audit.log_links import check_export_filter

        return check_export_filter(conn, query)
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
    # Without _type, the record: the access log (AuditEvent) comes only when _type names it,
    # as in $everything; a whole system's log is not what a registry's default export asks for.
    type_list = known or sorted(allowed - {"AuditEvent"})

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

    type_list, patients, scope_filters = restrict_to_caller(call, level, type_list, patients)
    type_list, type_filters = acting_filters(call, type_list, type_filters)
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
            "scope_filters": scope_filters,
            "access_conditions": access_conditions(call, type_list),
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
        shutil.rmtree(export_dir(call.settings, job_id), ignore_errors=True)
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
            select(job_files.c.path, job_files.c.res_type).where(job_files.c.job_id == job_id, job_files.c.name == names[0])
        ).first()
    if job.state != queue.DONE or row is None:
        raise FhirError.of(404, "not-found", f"Export job {job_id} has no file '{names[0]}'")
    check_owner(call, job, row[1])
    try:
        handle = open(row[0], "rb")
    except FileNotFoundError:
        raise FhirError.of(404, "not-found", f"The file '{names[0]}' of export job {job_id} is gone") from None
    size = os.fstat(handle.fileno()).st_size
    return StreamingResponse(_stream(handle), media_type=NDJSON, headers={"Content-Length": str(size)})


# ====================================================================== the job


def setup(settings) -> None:
    """Registration happens at import; make sure the export directory exists."""
    Path(settings.export_dir).mkdir(parents=True, exist_ok=True)
