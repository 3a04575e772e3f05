"""`GET /health` (liveness) and `GET /ready` (readiness), outside the FHIR base.

- `/health`: the process serves HTTP: 200 `{"status": "ok"}`, no database work,
  for a liveness probe that must not restart a server because its database is down.
- `/ready`: the database answers and its schema is at this release's Alembic
  head: 200 `{"status": "ready"}`; otherwise 503 with `Retry-After` and an
  OperationOutcome (`transient`) saying which check failed. For a load
  balancer's or orchestrator's readiness probe.

Both are plain JSON, need no token and are kept out of the FHIR base so that
FHIR access rules never apply to them.
"""

from __future__ import annotations

from functools import cache

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import FhirError, Issue, operation_outcome
from ..storage.database import Database
from ..storage.faults import RETRY_AFTER_SECONDS, classify


@cache
def _schema_heads() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    from ..storage.migrate import alembic_config

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def readiness(db: Database) -> str | None:
    """None when ready, else why not (in words fit for an operator)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import text

    try:
        with db.read() as conn:
            conn.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        answer = classify(exc)
        return "the database cannot be reached" if answer is None or answer.status == 503 else "the database check failed"
    expected = _schema_heads()
    if current != expected:
        return f"the database schema is at {sorted(current) or 'nothing'}, this release needs {sorted(expected)}: run `fhir-server migrate`"
    return None


def attach_health(app: FastAPI, db: Database) -> None:
    @app.get("/health", tags=["operations"], operation_id="health", summary="Liveness: the process serves HTTP")
    async def health():
        return JSONResponse({"status": "ok"})

    @app.get("/ready", tags=["operations"], operation_id="ready", summary="Readiness: database reachable, schema current")
    async def ready():
        why = await run_in_threadpool(readiness, db)
        if why is None:
            return JSONResponse({"status": "ready"})
        body = operation_outcome([Issue("error", "transient", f"Not ready: {why}")])
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}, media_type="application/fhir+json")


__all__ = ["attach_health", "readiness", "FhirError"]
