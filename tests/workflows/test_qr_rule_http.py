"""The QuestionnaireResponse write rule through HTTP: 422 and nothing stored."""

from __future__ import annotations

import uuid

import pytest

from fhir_server.errors import FhirError


def _questionnaire(client, url, version="1", status="active", items=None, date="2024-01-01"):
    q = {"resourceType": "Questionnaire", "url": url, "version": version, "status": status, "date": date,
         "item": items or [
             {"linkId": "age", "type": "integer", "required": True},
             {"linkId": "mood", "type": "choice", "answerValueSet": "http://example.org/vs/mood-" + url[-8:]},
         ]}
    r = client.post("/fhir/Questionnaire", json=q)
    assert r.status_code == 201, r.text
    return r.json()


def _response(questionnaire, *items, status="completed"):
    body = {"resourceType": "QuestionnaireResponse", "questionnaire": questionnaire, "status": status}
    if items:
        body["item"] = list(items)
    return body


@pytest.fixture
def qurl(client):
    url = f"http://example.org/q/{uuid.uuid4().hex[:8]}"
    vs = {"resourceType": "ValueSet", "url": "http://example.org/vs/mood-" + url[-8:], "status": "active",
          "compose": {"include": [{"system": "http://example.org/mood", "concept": [{"code": "good"}, {"code": "bad"}]}]}}
    assert client.post("/fhir/ValueSet", json=vs).status_code == 201
    _questionnaire(client, url)
    return url


def _count(client, url):
    return client.get("/fhir/QuestionnaireResponse", params={"questionnaire": url, "_summary": "count"}).json()["total"]


def test_conforming_response_is_stored(client, qurl):
    r = client.post("/fhir/QuestionnaireResponse", json=_response(qurl, {"linkId": "age", "answer": [{"valueInteger": 40}]},
                                                                   {"linkId": "mood", "answer": [{"valueCoding": {"system": "http://example.org/mood", "code": "good"}}]}))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("items,expression", [
    ([{"linkId": "age", "answer": [{"valueInteger": 4}]}, {"linkId": "x", "answer": [{"valueString": "?"}]}], "QuestionnaireResponse.item[1].linkId"),
    ([{"linkId": "age", "answer": [{"valueString": "forty"}]}], "QuestionnaireResponse.item[0].answer[0].value"),
    ([{"linkId": "mood", "answer": [{"valueCoding": {"system": "http://example.org/mood", "code": "meh"}}]},
      {"linkId": "age", "answer": [{"valueInteger": 4}]}], "QuestionnaireResponse.item[0].answer[0].value"),
    ([], "QuestionnaireResponse.item"),
])
def test_nonconforming_response_is_422_and_not_stored(client, qurl, items, expression):
    before = _count(client, qurl)
    r = client.post("/fhir/QuestionnaireResponse", json=_response(qurl, *items))
    assert r.status_code == 422, r.text
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert [i["expression"] for i in oo["issue"]] == [[expression]]
    assert _count(client, qurl) == before


def test_required_only_when_completed(client, qurl):
    assert client.post("/fhir/QuestionnaireResponse", json=_response(qurl, status="in-progress")).status_code == 201


def test_update_is_checked_too(client, qurl):
    r = client.post("/fhir/QuestionnaireResponse", json=_response(qurl, status="in-progress"))
    body = r.json()
    body["status"] = "completed"
    r = client.put(f"/fhir/QuestionnaireResponse/{body['id']}", json=body)
    assert r.status_code == 422
    body["item"] = [{"linkId": "age", "answer": [{"valueInteger": 3}]}]
    assert client.put(f"/fhir/QuestionnaireResponse/{body['id']}", json=body).status_code == 200


def test_patch_is_checked_too(client, qurl):
    r = client.post("/fhir/QuestionnaireResponse", json=_response(qurl, {"linkId": "age", "answer": [{"valueInteger": 3}]}))
    rid = r.json()["id"]
    patch = [{"op": "replace", "path": "/item/0/answer/0", "value": {"valueBoolean": True}}]
    r = client.patch(f"/fhir/QuestionnaireResponse/{rid}", json=patch, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422, r.text


def test_version_in_canonical_and_newest_active(client):
    url = f"http://example.org/q/{uuid.uuid4().hex[:8]}"
    _questionnaire(client, url, "1", items=[{"linkId": "old", "type": "string"}], date="2023-01-01")
    _questionnaire(client, url, "2", items=[{"linkId": "new", "type": "string"}], date="2024-01-01")
    _questionnaire(client, url, "3", status="draft", items=[{"linkId": "draft", "type": "string"}], date="2025-01-01")
    old = {"linkId": "old", "answer": [{"valueString": "x"}]}
    new = {"linkId": "new", "answer": [{"valueString": "x"}]}
    assert client.post("/fhir/QuestionnaireResponse", json=_response(f"{url}|1", old)).status_code == 201
    assert client.post("/fhir/QuestionnaireResponse", json=_response(f"{url}|1", new)).status_code == 422
    assert client.post("/fhir/QuestionnaireResponse", json=_response(url, new)).status_code == 201
    assert client.post("/fhir/QuestionnaireResponse", json=_response(url, old)).status_code == 422


def test_unknown_questionnaire_is_a_warning_by_default(client):
    r = client.post("/fhir/QuestionnaireResponse", json=_response("http://example.org/q/never", {"linkId": "z", "answer": [{"valueString": "x"}]}),
                    headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201
    assert any(i["severity"] == "warning" and i["code"] == "not-found" for i in r.json()["issue"])


def test_unknown_questionnaire_refused_when_configured(settings, client, monkeypatch):
    """FHIR_SERVER_UNKNOWN_QUESTIONNAIRE=refuse: 422 through HTTP, nothing stored; $validate says so too."""
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app
    from fhir_server.config import Settings
    from fhir_server.workflows import proms

    monkeypatch.setenv("FHIR_SERVER_UNKNOWN_QUESTIONNAIRE", "refuse")
    assert Settings().unknown_questionnaire == "refuse"
    monkeypatch.setenv("FHIR_SERVER_UNKNOWN_QUESTIONNAIRE", "ignore")
    with pytest.raises(ValueError, match="unknown_questionnaire"):
        Settings()
    canonical = f"http://example.org/q/never-{uuid.uuid4().hex[:8]}"
    body = _response(canonical, {"linkId": "z", "answer": [{"valueString": "x"}]})
    try:
        app = build_app(settings.model_copy(update={"unknown_questionnaire": "refuse"}))
        with TestClient(app, headers=dict(client.headers)) as c:
            r = c.post("/fhir/QuestionnaireResponse", json=body)
            assert r.status_code == 422, r.text
            assert [(i["code"], i["expression"]) for i in r.json()["issue"]] == [("not-found", ["QuestionnaireResponse.questionnaire"])]
            assert _count(c, canonical) == 0
            v = c.post("/fhir/QuestionnaireResponse/$validate", json=body)
            assert [i["severity"] for i in v.json()["issue"] if i["code"] == "not-found"] == ["error"]
    finally:
        proms.setup(settings)  # the session app's rule (warn) back
    assert client.post("/fhir/QuestionnaireResponse", json=body).status_code == 201
    v = client.post("/fhir/QuestionnaireResponse/$validate", json=body)
    assert [i["severity"] for i in v.json()["issue"] if i["code"] == "not-found"] == ["warning"]


def test_contained_questionnaire(client):
    body = _response("#q", {"linkId": "a", "answer": [{"valueInteger": 1}]})
    body["contained"] = [{"resourceType": "Questionnaire", "id": "q", "status": "active", "item": [{"linkId": "a", "type": "boolean"}]}]
    assert client.post("/fhir/QuestionnaireResponse", json=body).status_code == 422
    body["item"][0]["answer"] = [{"valueBoolean": True}]
    assert client.post("/fhir/QuestionnaireResponse", json=body).status_code == 201


def test_validate_reports_every_rule_at_type_and_instance_level(client, qurl):
    bad = _response(qurl, {"linkId": "age", "answer": [{"valueString": "forty"}]},
                    {"linkId": "mood", "answer": [{"valueCoding": {"system": "http://example.org/mood", "code": "meh"}}]},
                    {"linkId": "x", "answer": [{"valueString": "?"}]})
    before = _count(client, qurl)
    r = client.post("/fhir/QuestionnaireResponse/$validate", json=bad)
    assert r.status_code == 200, r.text
    errors = [(i["code"], i["expression"]) for i in r.json()["issue"] if i["severity"] == "error"]
    assert errors == [("value", ["QuestionnaireResponse.item[0].answer[0].value"]),
                      ("code-invalid", ["QuestionnaireResponse.item[1].answer[0].value"]),
                      ("structure", ["QuestionnaireResponse.item[2].linkId"])]
    assert _count(client, qurl) == before
    # instance level, mode update: completing a stored draft without its required answer
    draft = client.post("/fhir/QuestionnaireResponse", json=_response(qurl, status="in-progress")).json()
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {**draft, "status": "completed"}},
                                                          {"name": "mode", "valueCode": "update"}]}
    r = client.post(f"/fhir/QuestionnaireResponse/{draft['id']}/$validate", json=params)
    assert [(i["code"], i["expression"]) for i in r.json()["issue"] if i["severity"] == "error"] == [("required", ["QuestionnaireResponse.item"])]
    # and the stored draft itself conforms
    r = client.get(f"/fhir/QuestionnaireResponse/{draft['id']}/$validate")
    assert not [i for i in r.json()["issue"] if i["severity"] == "error"]


def test_answer_value_set_contained_in_the_questionnaire(client):
    url = f"http://example.org/q/{uuid.uuid4().hex[:8]}"
    q = {"resourceType": "Questionnaire", "url": url, "status": "active",
         "contained": [{"resourceType": "ValueSet", "id": "sides", "status": "active", "compose": {"include": [
             {"system": "http://example.org/side", "concept": [{"code": "left"}, {"code": "right"}]}]}}],
         "item": [{"linkId": "side", "type": "choice", "answerValueSet": "#sides"}]}
    assert client.post("/fhir/Questionnaire", json=q).status_code == 201
    ok = _response(url, {"linkId": "side", "answer": [{"valueCoding": {"system": "http://example.org/side", "code": "left"}}]})
    assert client.post("/fhir/QuestionnaireResponse", json=ok).status_code == 201
    bad = _response(url, {"linkId": "side", "answer": [{"valueCoding": {"system": "http://example.org/side", "code": "up"}}]})
    r = client.post("/fhir/QuestionnaireResponse", json=bad)
    assert r.status_code == 422 and r.json()["issue"][0]["code"] == "code-invalid"


@pytest.mark.parametrize("canonical", ["|", "|1.0.0"])
def test_a_canonical_without_url_names_no_questionnaire(client, canonical):
    """Not 'any Questionnaire' (of that version): unknown, so a warning here, a 422 under refuse."""
    r = client.post("/fhir/QuestionnaireResponse", json=_response(canonical, {"linkId": "44250-9", "answer": [{"valueString": "x"}]}),
                    headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201, r.text
    assert [i["code"] for i in r.json()["issue"] if i["severity"] == "warning"] == ["not-found"]
