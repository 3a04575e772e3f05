"""`$reindex`: rebuild search indexes as a durable, resumable background job.

`POST [base]/$reindex` (or `[base]/Type/$reindex`) records new or changed
custom SearchParameters as pending, and queues a job that re-extracts the index
rows of every resource of the affected types (all types when nothing is
pending), in primary-key order with a saved cursor. When it finishes, the
pending parameters become searchable. Progress: `GET [base]/$reindex-status?_jobId=`.
"""

from __future__ import annotations

import orjson
from sqlalchemy import func, select

from ..errors import FhirError, Issue, operation_outcome
from ..jobs import queue
from ..model import jsonio
from ..model.definitions import resource_types
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..search import custom, local_base
from ..search.indexer import delete_index, index_resource
from ..storage.schema import resources

KIND = "reindex"
BATCH = 500
DEFINITION = "http://example.org/fhir-server/OperationDefinition/reindex"


@operation("reindex", ("system", "type"), types=None, definition=DEFINITION, access="system")
def kick_off(call: OperationCall) -> Outcome:
    if call.method != "POST":
        raise FhirError.of(405, "not-supported", "$reindex is started with POST")
    with call.db.write() as conn:
        pending, types = custom.sync_from_resources(conn, call.res_type)
        if call.res_type:
            types = {call.res_type}
        elif not pending:
            types = set(resource_types())
        job_id = queue.enqueue(conn, KIND, {"urls": pending, "types": sorted(types), "base_url": call.ctx.base_url})
        custom.refresh(conn)
    queue.wakeup.set()
    status_url = f"{call.ctx.base_url}/$reindex-status?_jobId={job_id}"
    message = f"Re-indexing {', '.join(sorted(types)) if len(types) < 10 else f'{len(types)} resource types'}"
    if pending:
        message += f"; {len(pending)} SearchParameter(s) become searchable when it finishes"
    body = jsonio.dumps(operation_outcome([Issue("information", "informational", message)]))
    return Outcome(status=202, body=body, headers={"Content-Location": status_url})


@operation("reindex-status", ("system",), advertise=False, access="system")
def status(call: OperationCall) -> Outcome:
    job_id = dict(call.params).get("_jobId", "")
    with call.db.read() as conn:
        job = queue.get(conn, job_id)
    if job is None or job.kind != KIND:
        raise FhirError.of(404, "not-found", f"No reindex job '{job_id}'")
    params = [
        {"name": "jobId", "valueString": job.id},
        {"name": "state", "valueCode": job.state},
    ]
    if job.progress:
        params.append({"name": "progress", "valueString": job.progress})
    if job.error:
        params.append({"name": "error", "valueString": job.error})
    code = 200 if job.state in (queue.DONE, queue.FAILED, queue.CANCELLED) else 202
    return Outcome(status=code, body=jsonio.dumps({"resourceType": "Parameters", "parameter": params}))


def run_reindex(ctx: queue.JobContext) -> dict:
    """Re-extract index rows type by type, resuming from the saved cursor."""
    types: list[str] = ctx.job.params["types"]
    cursor = ctx.job.cursor or {"t": 0, "pk": 0, "done": 0}
    with ctx.db.read() as conn:
        total = conn.execute(
            select(func.count()).select_from(resources).where(resources.c.res_type.in_(types), resources.c.deleted.is_(False))
        ).scalar_one()
    while cursor["t"] < len(types):
        res_type = types[cursor["t"]]
        with ctx.db.write() as conn:
            custom.refresh(conn)  # pending parameters are extracted too
            rows = conn.execute(
                select(resources.c.pk, resources.c.content)
                .where(resources.c.res_type == res_type, resources.c.deleted.is_(False), resources.c.pk > cursor["pk"])
                .order_by(resources.c.pk)
                .limit(BATCH)
            ).all()
            with local_base.serving(ctx.job.params.get("base_url")):  # references to the base are local
                for pk, content in rows:
                    delete_index(conn, pk)
                    index_resource(conn, pk, res_type, orjson.loads(content))
        if rows:
            cursor = {"t": cursor["t"], "pk": rows[-1][0], "done": cursor["done"] + len(rows)}
        else:
            cursor = {"t": cursor["t"] + 1, "pk": 0, "done": cursor["done"]}
        ctx.checkpoint(cursor, f"{cursor['done']}/{total} resources")

    def activate(conn) -> None:
        custom.activate(conn, ctx.job.params["urls"])

    ctx.complete({"reindexed": cursor["done"]}, within=activate)
    with ctx.db.read() as conn:
        custom.refresh(conn)
    return {"reindexed": cursor["done"]}


def setup(settings) -> None:
    queue.register_handler(KIND, run_reindex, lease_seconds=120)


def on_database(db, settings) -> None:
    with db.read() as conn:
        custom.refresh(conn)
