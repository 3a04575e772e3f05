"""Patient-reported outcomes: responses checked against their Questionnaire,
scores stored as Observations, the Questionnaires we ship, the registry pull.

Plugin hooks (fhir_server.plugins): `setup` registers the write rule and the
scoring subscriber; `on_database` loads resources/questionnaires/.
"""

from __future__ import annotations


def setup(settings) -> None:
    from ...rest import rules
    from .rule import make_rule

    rules.register(make_rule(getattr(settings, "unknown_questionnaire", "warn")), "questionnaire_response_rule")
    from ... import events
    from .hooks import on_change

    events.subscribe(on_change)


def on_database(db, settings) -> None:
    """Serve the Questionnaires shipped in resources/questionnaires/."""
    from ..common import QUESTIONNAIRES, load_shipped

    load_shipped(db, QUESTIONNAIRES, "Questionnaire")
