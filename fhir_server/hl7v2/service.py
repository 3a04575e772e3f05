"""Wiring of the HL7 v2 interface into the server: the HTTP endpoint, the MLLP
listener and the outbox worker, all sharing one `apply_transaction`."""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..rest.bundles import run_transaction
from ..rest.context import RequestContext
from ..storage.database import Database
from . import inbound, outbound
from .listener import start_mllp_server

log = logging.getLogger("fhir_server.hl7v2")


def make_apply_transaction(db: Database, settings: Settings):
    """A FHIR transaction Bundle applied atomically, as the v2 mapper needs it."""

    def apply_transaction(bundle: dict) -> dict:
        return run_transaction(db, RequestContext(base_url=""), bundle, settings)

    return apply_transaction


def setup(settings: Settings) -> None:
    """Outbound SIU on Appointment changes, when destinations are configured."""
    outbound.uninstall_outbound()
    destinations = [d for d in settings.hl7_destinations.split(",") if d.strip()]
    if destinations:
        outbound.install_outbound(destinations)


def attach(app: FastAPI, db: Database, settings: Settings) -> None:
    """Add `POST /hl7v2` and run the MLLP listener / outbox worker with the app."""
    apply = make_apply_transaction(db, settings)

    @app.post("/hl7v2", operation_id="hl7v2-message", summary="Receive one HL7 v2 message (ER7), answered with its ACK")
    async def hl7v2_over_http(request: Request):
        from ..security.authz import ANONYMOUS, AccessRequest, authorize

        authorize(getattr(request.state, "principal", ANONYMOUS), AccessRequest("hl7v2"))  # a system/ scope that writes
        raw = await request.body()
        if len(raw) > settings.mllp_max_message_bytes:
            ack = await run_in_threadpool(_oversize_ack, raw, settings.mllp_max_message_bytes)
        else:
            peer = request.client.host if request.client else ""
            res = await run_in_threadpool(inbound.process_message_ex, raw, engine=db.engine, apply_transaction=apply, sender_hint=peer)
            ack = res.app_ack or res.ack  # HTTP answers once: the application ACK when one is asked for
        return Response(content=ack.replace("\r", "\r\n") if request.query_params.get("crlf") else ack, media_type="application/hl7-v2; charset=utf-8")

    run_outbox = bool(settings.hl7_destinations.strip()) and settings.run_background_jobs
    if not settings.mllp_port and not run_outbox:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        server = None
        stop = asyncio.Event()
        worker = None
        if settings.mllp_port:
            handler = inbound.mllp_handler(db.engine, apply)
            audit_writer = getattr(a.state, "audit_writer", None)  # the access log (fhir_server.audit), when on
            if audit_writer is not None:
                from ..audit.mllp import audited

                handler = audited(handler, audit_writer)
            server = await _start_listener(settings, handler)
        if run_outbox:
            worker = asyncio.create_task(outbound.run_outbox_worker(db.engine, stop))
        try:
            async with inner(a) as state:
                yield state
        finally:
            stop.set()
            if worker:
                await worker
            if server:
                server.close()
                await server.wait_closed()

    app.router.lifespan_context = lifespan


async def _start_listener(settings: Settings, handler):
    # Several uvicorn workers share the port (SO_REUSEPORT), each taking connections.
    reuse = hasattr(socket, "SO_REUSEPORT")
    srv = await start_mllp_server(settings.mllp_host, settings.mllp_port, handler, settings.mllp_max_message_bytes, reuse_port=reuse)
    log.info("MLLP listening on %s:%s", settings.mllp_host, settings.mllp_port)
    return srv


def _oversize_ack(raw: bytes, limit: int) -> str:
    from .listener import oversize_ack

    return oversize_ack(raw[:4096], limit).decode("utf-8", "replace")
