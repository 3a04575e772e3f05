"""A registry's bulk pull: $export of completed responses and their scores,
filtered by questionnaire, incrementally with _since."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from tests.operations.test_export import Server
from tests.workflows.test_scores import response_for

PHQ9 = "http://fhir-server.example/Questionnaire/phq-9"


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.close()


def _respond(server, name, answers, status="completed"):
    body = response_for(name, answers, status=status)
    body.pop("id")
    return server.create(body)


def test_export_responses_and_scores_by_questionnaire_and_since(server):
    phq_old = _respond(server, "phq-9", [1] * 9)
    _respond(server, "gad-7", [2] * 7)
    time.sleep(0.02)
    since = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    time.sleep(0.02)
    phq_new = _respond(server, "phq-9", [3] * 9)
    gad_new = _respond(server, "gad-7", [0] * 7)
    draft = _respond(server, "phq-9", [0] * 9, status="in-progress")
    server.create({"resourceType": "Patient", "name": [{"family": "NotExported"}]})

    params = {"_type": "QuestionnaireResponse,Observation",
              "_typeFilter": [f"QuestionnaireResponse?questionnaire={PHQ9}&status=completed",
                              "Observation?code=http://loinc.org|44261-6"]}
    files = server.download(server.finish(server.kick_off(params=params)))
    assert set(files) == {"QuestionnaireResponse", "Observation"}
    assert {r["id"] for r in files["QuestionnaireResponse"]} == {phq_old, phq_new}
    assert sorted(r["valueInteger"] for r in files["Observation"]) == [9, 27]
    assert {r["derivedFrom"][0]["reference"] for r in files["Observation"]} == {f"QuestionnaireResponse/{phq_old}", f"QuestionnaireResponse/{phq_new}"}

    files = server.download(server.finish(server.kick_off(params={**params, "_since": since})))
    assert [r["id"] for r in files["QuestionnaireResponse"]] == [phq_new]
    assert [r["valueInteger"] for r in files["Observation"]] == [27]

    everything = server.download(server.finish(server.kick_off(params={"_type": "QuestionnaireResponse,Observation", "_since": since})))
    assert {r["id"] for r in everything["QuestionnaireResponse"]} == {phq_new, gad_new, draft}
    assert len(everything["Observation"]) == 2  # the two completed responses' scores
