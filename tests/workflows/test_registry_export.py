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


def test_registry_pulls_a_completed_response_with_its_score(client):
    """$changes hands the registry the response and its score Observation, written in one
    transaction, together; a response still in progress comes as such (the registry keeps
    the completed ones), and its later completion comes as a new version with its score."""
    from fhir_server.workflows.proms.scoring import observation_id
    from tests.operations.test_changes import pull, pull_until

    _, cursor = pull(client, count=1000)  # the registry's cursor: everything before this test
    draft = response_for("phq-9", [0] * 9, status="in-progress")
    draft_id = draft.pop("id")
    assert client.put(f"/fhir/QuestionnaireResponse/{draft_id}", json={**draft, "id": draft_id}).status_code == 201
    done = response_for("gad-7", [2] * 7)
    done_id = done.pop("id")
    assert client.put(f"/fhir/QuestionnaireResponse/{done_id}", json={**done, "id": done_id}).status_code == 201
    got, cursor = pull_until(client, cursor, 3)
    seen = [(e["resource"]["resourceType"], e["resource"]["id"], e["resource"].get("status")) for e in got]
    assert seen[0] == ("QuestionnaireResponse", draft_id, "in-progress")
    assert sorted(seen[1:]) == [("Observation", observation_id(done_id, "70274-6"), "final"), ("QuestionnaireResponse", done_id, "completed")]
    assert [e["resource"].get("valueInteger") for e in got if e["resource"]["resourceType"] == "Observation"] == [14]
    draft["status"] = "completed"
    assert client.put(f"/fhir/QuestionnaireResponse/{draft_id}", json={**draft, "id": draft_id}).status_code == 200
    got, _ = pull_until(client, cursor, 2)
    assert sorted((e["resource"]["resourceType"], e["response"]["etag"]) for e in got) == [("Observation", 'W/"1"'), ("QuestionnaireResponse", 'W/"2"')]
