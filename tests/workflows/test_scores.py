"""PHQ-9 and GAD-7 totals against worked examples, stored as Observations in
the response's transaction; the PER-style registration's Tasks."""

from __future__ import annotations

import json
import uuid

import pytest

from fhir_server.workflows.common import QUESTIONNAIRES
from fhir_server.workflows.proms.scoring import compute_scores, observation_id

LOINC = "http://loinc.org"
FREQ = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]  # 0..3


def _q(name):
    return json.loads((QUESTIONNAIRES / f"{name}.json").read_text())


def response_for(name, answers, status="completed", patient="Patient/p1", omit_system=False):
    q = _q(name)
    scored = [i for i in q["item"] if i.get("answerOption") and i["answerOption"][0].get("extension")]
    assert len(scored) == len(answers)
    items = []
    for item, a in zip(scored, answers):
        coding = {"system": LOINC, "code": FREQ[a]}
        if omit_system:
            coding.pop("system")
        items.append({"linkId": item["linkId"], "answer": [{"valueCoding": coding}]})
    return {"resourceType": "QuestionnaireResponse", "id": uuid.uuid4().hex, "questionnaire": q["url"], "status": status,
            "subject": {"reference": patient}, "authored": "2024-06-03T09:00:00Z", "item": items}


# (answers per item, published total / severity band)
PHQ9 = [
    ([0] * 9, 0),  # minimal
    ([3] * 9, 27),  # severe (maximum)
    ([1] * 9, 9),  # mild
    ([3, 2, 2, 1, 1, 1, 0, 0, 0], 10),  # moderate (lower bound)
    ([2, 3, 2, 2, 3, 1, 2, 2, 0], 17),  # moderately severe
]
GAD7 = [
    ([0] * 7, 0),
    ([3] * 7, 21),
    ([1] * 7, 7),
    ([2, 1, 3, 0, 2, 1, 0], 9),
    ([2, 2, 2, 2, 2, 2, 3], 15),  # severe (lower bound)
]


@pytest.mark.parametrize("name,answers,total", [("phq-9", a, t) for a, t in PHQ9] + [("gad-7", a, t) for a, t in GAD7])
def test_totals_worked_examples(name, answers, total):
    scores = compute_scores(response_for(name, answers), _q(name))
    assert [(s.code[0]["code"], s.value) for s in scores] == [({"phq-9": "44261-6", "gad-7": "70274-6"}[name], total)]


def test_coding_without_system_still_scores():
    scores = compute_scores(response_for("phq-9", [1, 2, 3, 0, 0, 0, 0, 0, 1], omit_system=True), _q("phq-9"))
    assert scores[0].value == 7


def test_ordinal_sum_without_calculated_expression():
    q = _q("gad-7")
    q["item"] = [i for i in q["item"] if "extension" not in i]  # drop the total item
    q["code"] = [{"system": LOINC, "code": "69737-5"}]
    scores = compute_scores(response_for("gad-7", [1, 1, 1, 1, 1, 1, 2]), q)
    assert [(s.link_id, s.value) for s in scores] == [("total", 8)]


def test_completed_response_gets_its_score_observation(client):
    body = response_for("phq-9", [3, 2, 2, 1, 1, 1, 0, 0, 0])
    rid = body.pop("id")
    r = client.put(f"/fhir/QuestionnaireResponse/{rid}", json={**body, "id": rid})
    assert r.status_code == 201, r.text
    obs = client.get(f"/fhir/Observation/{observation_id(rid, '44261-6')}").json()
    assert obs["valueInteger"] == 10
    assert obs["code"]["coding"][0]["code"] == "44261-6"
    assert obs["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{rid}"}]
    assert obs["subject"] == {"reference": "Patient/p1"}
    assert obs["effectiveDateTime"] == "2024-06-03T09:00:00Z"
    found = client.get("/fhir/Observation", params={"derived-from": f"QuestionnaireResponse/{rid}"}).json()
    assert found["total"] == 1


def test_amended_response_updates_its_score(client):
    body = response_for("gad-7", [1] * 7)
    rid = body.pop("id")
    client.put(f"/fhir/QuestionnaireResponse/{rid}", json={**body, "id": rid})
    body["status"] = "amended"
    body["item"][0]["answer"][0]["valueCoding"]["code"] = FREQ[3]
    assert client.put(f"/fhir/QuestionnaireResponse/{rid}", json={**body, "id": rid}).status_code == 200
    obs = client.get(f"/fhir/Observation/{observation_id(rid, '70274-6')}").json()
    assert obs["valueInteger"] == 9 and obs["status"] == "amended"
    assert client.get("/fhir/Observation", params={"derived-from": f"QuestionnaireResponse/{rid}"}).json()["total"] == 1


def test_in_progress_response_has_no_score(client):
    body = response_for("gad-7", [1] * 7, status="in-progress")
    rid = body.pop("id")
    client.put(f"/fhir/QuestionnaireResponse/{rid}", json={**body, "id": rid})
    assert client.get(f"/fhir/Observation/{observation_id(rid, '70274-6')}").status_code == 404


def test_score_and_response_share_one_transaction(client):
    """A transaction Bundle whose other entry fails leaves neither response nor score."""
    body = response_for("phq-9", [1] * 9)
    rid = body.pop("id")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**body, "id": rid}, "request": {"method": "PUT", "url": f"QuestionnaireResponse/{rid}"}},
        {"resource": {"resourceType": "Patient", "birthDate": "not-a-date"}, "request": {"method": "POST", "url": "Patient"}},
    ]}
    assert client.post("/fhir", json=bundle).status_code >= 400
    assert client.get(f"/fhir/QuestionnaireResponse/{rid}").status_code == 404
    assert client.get(f"/fhir/Observation/{observation_id(rid, '44261-6')}").status_code == 404


def test_shipped_questionnaires_are_served(client):
    for name in ("phq-9", "gad-7", "per-registration", "care-seeking-symptoms"):
        r = client.get(f"/fhir/Questionnaire/{name}")
        assert r.status_code == 200 and r.json()["status"] == "active"


def test_per_registration_makes_one_task_per_scale(client):
    patient = f"Patient/per-{uuid.uuid4().hex[:8]}"
    body = {"resourceType": "QuestionnaireResponse", "questionnaire": "http://fhir-server.example/Questionnaire/per-registration",
            "status": "completed", "subject": {"reference": patient}, "authored": "2024-06-01T10:00:00Z", "item": [
                {"linkId": "visit", "answer": [{"valueDate": "2024-06-10"}]},
                {"linkId": "scales", "answer": [
                    {"valueCoding": {"system": "http://fhir-server.example/CodeSystem/prom-instrument", "code": "http://fhir-server.example/Questionnaire/phq-9"}},
                    {"valueCoding": {"system": "http://fhir-server.example/CodeSystem/prom-instrument", "code": "http://fhir-server.example/Questionnaire/gad-7"}}]}]}
    r = client.post("/fhir/QuestionnaireResponse", json=body)
    assert r.status_code == 201, r.text
    tasks = client.get("/fhir/Task", params={"owner": patient, "status": "requested"}).json()
    got = sorted(e["resource"]["input"][0]["valueCanonical"] for e in tasks.get("entry", []))
    assert got == ["http://fhir-server.example/Questionnaire/gad-7", "http://fhir-server.example/Questionnaire/phq-9"]
    assert all(e["resource"]["restriction"]["period"]["end"] == "2024-06-10" for e in tasks["entry"])
    # an unknown scale is refused by the response rule
    body["item"][1]["answer"] = [{"valueCoding": {"system": "http://fhir-server.example/CodeSystem/prom-instrument", "code": "x"}}]
    assert client.post("/fhir/QuestionnaireResponse", json=body).status_code == 422


def test_item_weight_on_the_coding_and_a_calculated_mean(client):
    """SDC itemWeight on the option's Coding; a calculatedExpression with a decimal result
    is stored as a {score} Quantity; a broken expression does not fail the patient's write."""
    sdc = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
    url = f"http://example.org/q/{uuid.uuid4().hex[:8]}"

    def opt(code, w):
        return {"valueCoding": {"system": "http://example.org/s", "code": code,
                                "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/itemWeight", "valueDecimal": w}]}}

    q = {"resourceType": "Questionnaire", "url": url, "status": "active", "code": [{"system": "http://example.org/c", "code": "q"}],
         "item": [{"linkId": f"q{i}", "type": "choice", "answerOption": [opt("a", 0), opt("b", 1), opt("c", 2)]} for i in (1, 2)] + [
             {"linkId": "mean", "type": "decimal", "readOnly": True, "code": [{"system": "http://example.org/c", "code": "mean"}],
              "extension": [{"url": sdc, "valueExpression": {"language": "text/fhirpath",
                                                             "expression": "%resource.item.where(linkId.startsWith('q')).answer.value.weight().sum() / 2"}}]},
             {"linkId": "broken", "type": "integer", "readOnly": True,
              "extension": [{"url": sdc, "valueExpression": {"language": "text/fhirpath", "expression": "item.frobnicate()"}}]}]}
    assert client.post("/fhir/Questionnaire", json=q).status_code == 201
    rid = uuid.uuid4().hex
    body = {"resourceType": "QuestionnaireResponse", "id": rid, "questionnaire": url, "status": "completed", "item": [
        {"linkId": "q1", "answer": [{"valueCoding": {"system": "http://example.org/s", "code": "b"}}]},
        {"linkId": "q2", "answer": [{"valueCoding": {"system": "http://example.org/s", "code": "c"}}]}]}
    assert client.put(f"/fhir/QuestionnaireResponse/{rid}", json=body).status_code == 201
    found = client.get("/fhir/Observation", params={"derived-from": f"QuestionnaireResponse/{rid}"}).json()
    assert [(e["resource"]["code"]["coding"][0]["code"], e["resource"].get("valueQuantity")) for e in found["entry"]] == [
        ("mean", {"value": 1.5, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"})]


@pytest.mark.parametrize("how", ["entered-in-error", "delete"])
def test_a_withdrawn_response_withdraws_its_score(client, how):
    body = response_for("phq-9", [2] * 9)
    rid = body.pop("id")
    assert client.put(f"/fhir/QuestionnaireResponse/{rid}", json={**body, "id": rid}).status_code == 201
    # a client's own Observation derived from the response is not the server's score: left alone
    mine = client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "note"},
                                                  "derivedFrom": [{"reference": f"QuestionnaireResponse/{rid}"}]}).json()["id"]
    if how == "delete":
        assert client.delete(f"/fhir/QuestionnaireResponse/{rid}").status_code in (200, 204)
    else:
        r = client.put(f"/fhir/QuestionnaireResponse/{rid}", json={**body, "id": rid, "status": "entered-in-error"})
        assert r.status_code == 200, r.text
    score = client.get(f"/fhir/Observation/{observation_id(rid, '44261-6')}").json()
    assert score["status"] == "entered-in-error" and score["valueInteger"] == 18
    assert client.get(f"/fhir/Observation/{mine}").json()["status"] == "final"
