"""Wiring of the subscriptions engine (listed in fhir_server/plugins.py)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from starlette.concurrency import run_in_threadpool

from .. import events
from ..rest import rules
from . import matching, registry, secrets


def setup(settings) -> None:
    """The Subscription preparer, the change subscriber and the $operations."""
    registry.configure(settings)
    secrets.configure(settings)
    rules.register_preparer("Subscription", registry.prepare_subscription, "subscriptions")
    events.subscribe(matching.on_change)
    from ..operations import subscription_events, subscription_status, subscription_ws_token  # noqa: F401  (register)
    from ..rest.capabilities import register_resource_extension
    from . import topics
    from .spec import BACKPORT

    for url in sorted(topics.all_topics()):
        register_resource_extension("Subscription", {"url": BACKPORT + "capabilitystatement-subscriptiontopic-canonical",
                                                     "valueCanonical": url})


def on_database(db, settings) -> None:
    """The key sealing channel.header secrets (secrets.py), made on first start."""
    secrets.ensure_key(db.engine)


def attach(app, db, settings) -> None:
    """The websocket endpoint, and a delivery thread for the app's lifetime."""
    from .delivery import Deliverer, DeliveryThread
    from .websocket import Sockets, attach_websocket

    sockets = Sockets()
    app.state.subscription_sockets = sockets
    attach_websocket(app, db, sockets, settings.base_path.rstrip("/"), settings)
    if not settings.run_background_jobs:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        thread = DeliveryThread(Deliverer(db, settings, sockets), settings.subscription_poll_seconds)
        sockets.on_bind = thread.wakeup.set
        thread.start()
        app.state.subscription_delivery = thread
        try:
            async with inner(a) as state:
                yield state
        finally:
            thread.stop()
            await run_in_threadpool(thread.join, 30)

    app.router.lifespan_context = lifespan
