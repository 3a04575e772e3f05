"""Who may pull the change feed: a registry's system/ token reads the types its scopes
read in full, and nothing else (a chat message is not an Observation)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import make_token
from tests.operations.test_changes import pull


def _as(scope: str, patient: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(scope, patient=patient)}"}


def _feed(anonymous_client, headers, **params):
    return anonymous_client.get("/fhir/$changes", params=params, headers=headers)


@pytest.fixture
def written(client):
    """A cursor, then one Observation and one chat message written after it."""
    _, cursor = pull(client, types="QuestionnaireResponse,Observation,Communication")
    tag = uuid.uuid4().hex
    obs = client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": tag}}).json()["id"]
    msg = client.post("/fhir/Communication", json={"resourceType": "Communication", "status": "completed",
                                                   "payload": [{"contentString": "private chat " + tag}]}).json()["id"]
    return cursor, obs, msg


def test_a_type_the_token_does_not_read_is_403(anonymous_client, written):
    cursor, _, msg = written
    registry = _as("system/Observation.rs")
    r = _feed(anonymous_client, registry, _type="Communication", _cursor=cursor)
    assert r.status_code == 403, r.text
    assert "system/Communication.rs" in r.text and msg not in r.text
    r = _feed(anonymous_client, registry, _type="Observation,Communication", _cursor=cursor)
    assert r.status_code == 403 and msg not in r.text


def test_without_type_the_feed_serves_what_the_token_reads(anonymous_client, written):
    cursor, obs, msg = written
    r = _feed(anonymous_client, _as("system/Observation.rs"), _cursor=cursor)
    assert r.status_code == 200, r.text
    bundle = r.json()
    got = [e["resource"]["id"] for e in bundle.get("entry", []) if "resource" in e]
    assert obs in got and msg not in got
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Observation"}
    assert "_type=Observation&" in bundle["link"][0]["url"]
    # the full registry scope reads both
    both = _feed(anonymous_client, _as("system/Observation.rs system/Communication.rs"), _cursor=cursor).json()
    assert {obs, msg} <= {e["resource"]["id"] for e in both["entry"] if "resource" in e}


def test_a_token_reading_part_of_a_type_is_403(anonymous_client, written):
    cursor, _, _ = written
    r = _feed(anonymous_client, _as("system/Observation.rs?category=survey"), _type="Observation", _cursor=cursor)
    assert r.status_code == 403 and "part of" in r.text


def test_a_token_reading_none_of_the_types_is_403(anonymous_client, written):
    cursor, _, _ = written
    r = _feed(anonymous_client, _as("system/Patient.rs"), _cursor=cursor)
    assert r.status_code == 403


def test_patient_and_user_tokens_are_refused(anonymous_client, written):
    cursor, _, _ = written
    assert _feed(anonymous_client, _as("patient/*.rs", patient="p1"), _cursor=cursor).status_code == 403
    assert _feed(anonymous_client, {"Authorization": f"Bearer {make_token('user/*.rs', fhir_user='Practitioner/x')}"},
                 _cursor=cursor).status_code == 403
    assert _feed(anonymous_client, {}, _cursor=cursor).status_code == 401
