"""Terminology: the shipped R4 CodeSystems/ValueSets/ConceptMaps and the engine behind
$expand, $lookup, $validate-code, $subsumes, $translate and the token search modifiers
:in, :not-in, :above, :below.

Plugin hooks: ``on_database`` loads the shipped package into the database
(``FHIR_SERVER_TERMINOLOGY_LOAD``, default true; once per package version).
"""

from __future__ import annotations


def setup(settings) -> None:
    """Register the terminology $operations."""
    import importlib

    for name in ("lookup", "subsumes", "expand", "validate_code", "translate"):
        importlib.import_module(f"fhir_server.operations.{name}")


def on_database(db, settings) -> None:
    if getattr(settings, "terminology_load", True):
        from .loader import load_package

        load_package(db)
