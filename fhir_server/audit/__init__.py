"""The access log: every API access leaves an IHE BALP AuditEvent (docs/audit.md).

Plugin hooks (fhir_server.plugins): `setup` subscribes the in-transaction write hook
(`audit.writes`) and registers the retention job; `attach` puts the audit middleware
in front of the app (`audit.middleware`) with its batch writer (`audit.writer`), flushed
every `FHIR_SERVER_AUDIT_FLUSH_SECONDS` and at shutdown. `FHIR_SERVER_AUDIT=off` leaves
the middleware out (for experiments): nothing is logged then.
"""

from __future__ import annotations


def enabled(settings) -> bool:
    return str(getattr(settings, "audit", "on")).strip().lower() not in ("off", "false", "0", "no")


def setup(settings) -> None:
    from .. import events
    from . import retention
    from .writes import on_change

    events.subscribe(on_change)
    retention.register()


def attach(app, db, settings) -> None:
    import atexit
    from contextlib import asynccontextmanager

    from starlette.concurrency import run_in_threadpool

    from .middleware import AuditMiddleware
    from .writer import AuditWriter

    if not enabled(settings):
        return
    writer = AuditWriter(db, flush_seconds=float(getattr(settings, "audit_flush_seconds", 1.0)))
    app.state.audit_writer = writer
    server_base = settings.public_base_url or settings.auth_base_url
    app.add_middleware(AuditMiddleware, writer=writer, base_path=settings.base_path, server_base=server_base)
    atexit.register(writer.close)  # a process ending without the app's shutdown still writes what it holds
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        try:
            async with inner(a) as state:
                yield state
        finally:
            await run_in_threadpool(writer.close)

    app.router.lifespan_context = lifespan
