"""Assemble the server: database up to date, rules and hooks installed, app built.

Kept apart from the HTTP layer so that the CLI, the tests and each uvicorn
worker build the same server the same way.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from .config import Settings
from .storage.database import Database
from .storage.migrate import upgrade

log = logging.getLogger("fhir_server")


def install_plugins(settings: Settings) -> None:
    """Register write rules, event subscribers and $operations (idempotent)."""
    from . import plugins

    plugins.install(settings)


def build_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    from .api.app import create_app

    settings = settings or Settings()
    db = db or Database(settings.resolved_database_url())
    upgrade(db.engine)
    install_plugins(settings)
    from . import plugins
    from .storage.migrate import startup_lock

    with startup_lock(db.engine):  # several worker processes seed at once: one at a time
        plugins.on_database(db, settings)
    app = create_app(settings, db)
    plugins.attach(app, db, settings)
    from .jobs.runner import attach_background_workers

    attach_background_workers(app, db, settings)
    return app
