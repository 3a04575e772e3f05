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


def make_writer(db, settings):
    """The batch writer of read events: in a child process (`FHIR_SERVER_AUDIT_WRITER=process`:
    its CPU stays off the event loop's GIL) or a thread of this process (`thread`). `auto`, the
    default, is `process` for both databases (an in-memory SQLite database, which another
    process cannot open, always gets the thread). With a thread, the event loop waited for the
    GIL after each socket write while the writer ran (py-spy: the response head's write went
    from 19% to 55% of the loop's samples); bench_protected on SQLite, thread against process,
    two runs each: read 0.46/0.45 against 0.52/0.50 of open, search 0.44/0.43 against 0.57/0.52."""
    from .process_writer import ProcessAuditWriter
    from .writer import AuditWriter

    flush_seconds = float(getattr(settings, "audit_flush_seconds", 0.2))
    url = db.engine.url
    sqlite = url.get_backend_name() == "sqlite"
    in_memory = sqlite and (url.database or ":memory:") in ("", ":memory:")
    mode = str(getattr(settings, "audit_writer", "auto")).strip().lower()
    if mode == "auto":
        mode = "process"
    if mode == "process" and not in_memory:
        return ProcessAuditWriter(url.render_as_string(hide_password=False), flush_seconds=flush_seconds)
    return AuditWriter(db, flush_seconds=flush_seconds)


def attach(app, db, settings) -> None:
    import atexit
    from contextlib import asynccontextmanager

    from starlette.concurrency import run_in_threadpool

    from .middleware import AuditMiddleware

    if not enabled(settings):
        return
    writer = make_writer(db, settings)
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
