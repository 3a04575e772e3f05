"""The one place that wires optional modules into the generic engine."""

from __future__ import annotations

from .config import Settings


def install(settings: Settings) -> None:
    """Each import registers its rules, subscribers or $operations."""
    import importlib

    for name in PLUGIN_MODULES:
        module = importlib.import_module(name)
        setup = getattr(module, "setup", None)
        if setup:
            setup(settings)


def on_database(db, settings) -> None:
    """After migrations: let plugins seed what they serve (NamingSystems, ...)."""
    import importlib

    for name in PLUGIN_MODULES:
        hook = getattr(importlib.import_module(name), "on_database", None)
        if hook:
            hook(db, settings)


def attach(app, db, settings) -> None:
    """Let plugins add routes and lifespan services to the app."""
    import importlib

    for name in PLUGIN_MODULES:
        hook = getattr(importlib.import_module(name), "attach", None)
        if hook:
            hook(app, db, settings)


PLUGIN_MODULES: list[str] = [
    "fhir_server.search.local_base",
    "fhir_server.identifiers.rules",
    "fhir_server.operations.export",
    "fhir_server.operations.everything",
    "fhir_server.operations.reindex",
    "fhir_server.operations.match",
    "fhir_server.hl7v2.service",
    "fhir_server.operations.lastn",
    "fhir_server.operations.meta",
    "fhir_server.operations.meta_add",
    "fhir_server.operations.meta_delete",
    "fhir_server.operations.validate",
    "fhir_server.terminology",
    "fhir_server.model.required_profiles",
    "fhir_server.workflows.proms",
    "fhir_server.operations.changes",
    "fhir_server.workflows.triage",
    "fhir_server.operations.queue_position",
    "fhir_server.operations.chat_poll",
    "fhir_server.subscriptions.plugin",
    "fhir_server.notify",
    "fhir_server.workflows.booking",
    "fhir_server.operations.appointment_find",
    "fhir_server.operations.appointment_hold",
    "fhir_server.operations.appointment_book",
    "fhir_server.documents",
    "fhir_server.workflows.claims",
    "fhir_server.operations.claim_submit",
    "fhir_server.auth",
    "fhir_server.audit",
]
