"""Write rule: a QuestionnaireResponse must conform to its Questionnaire.

Runs on create, update and patch (and in $validate, which runs the registered
write rules). Conformance problems are refused with 422 and one issue per
problem (see fhir_server.model.qr_validation). A response whose Questionnaire
is not on this server is stored with a warning, or refused with 422 when
`unknown_questionnaire = refuse` (FHIR_SERVER_UNKNOWN_QUESTIONNAIRE).
"""

from __future__ import annotations

from sqlalchemy import Connection

from ...errors import FhirError, Issue
from ...model.qr_validation import validate_response
from .resolve import options_resolver, resolve_canonical


def make_rule(unknown: str = "warn"):
    if unknown not in ("warn", "refuse"):
        raise ValueError("unknown_questionnaire must be 'warn' or 'refuse'")

    def questionnaire_response_rule(conn: Connection, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
        if res_type != "QuestionnaireResponse":
            return []
        canonical = resource.get("questionnaire")
        if not isinstance(canonical, str) or not canonical:
            return []  # R4 allows a response without its Questionnaire
        questionnaire = resolve_canonical(conn, "Questionnaire", canonical, resource)
        if questionnaire is None:
            message = f"Questionnaire '{canonical}' is not known to this server, so the answers were not checked against it"
            if unknown == "refuse":
                raise FhirError.of(422, "not-found", message.replace(", so the answers were not checked against it", ""), "QuestionnaireResponse.questionnaire")
            return [Issue("warning", "not-found", message, ["QuestionnaireResponse.questionnaire"])]
        errors = validate_response(resource, questionnaire, options_resolver(conn, questionnaire))
        if errors:
            raise FhirError(422, errors)
        return []

    return questionnaire_response_rule
