"""Gaps closed after issue 12, through real tokens: `$match` and type/system `$meta`
answer only from what the caller may see; a `user/` token without fhirUser reaches
nothing; a revocation in one process takes effect in every process."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.auth.conftest import pesel

PESEL = "urn:oid:2.16.840.1.113883.3.4424.1.1.616"


def _as(app, token: str) -> TestClient:
    return TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"})


def _patient(client, family: str, birth: str = "1970-01-01", **extra) -> str:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family, "given": ["Ann"]}],
                                           "birthDate": birth, **extra})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _match_body(family: str, birth: str = "1970-01-01", identifier: list | None = None) -> dict:
    patient = {"resourceType": "Patient", "name": [{"family": family, "given": ["Ann"]}], "birthDate": birth}
    if identifier:
        patient["identifier"] = identifier
    return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]}


# ------------------------------------------------------------------ $match


def test_match_finds_only_patients_the_token_may_see(app, client, issue_token):
    family = "Match" + uuid.uuid4().hex[:6]
    number = pesel()
    mine = _patient(client, family)
    other = _patient(client, family, identifier=[{"system": PESEL, "value": number}])
    # a system token sees both candidates
    found = client.post("/fhir/Patient/$match", json=_match_body(family)).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {mine, other}
    with _as(app, issue_token(scope="patient/Patient.rs", patient=mine)) as c:
        by_name = c.post("/fhir/Patient/$match", json=_match_body(family))
        assert by_name.status_code == 200, by_name.text
        assert [e["resource"]["id"] for e in by_name.json()["entry"]] == [mine]
        # the other person's national number names them certainly - yet stays unknown to this token
        by_number = c.post("/fhir/Patient/$match", json=_match_body("Nobody", identifier=[{"system": PESEL, "value": number}]))
        assert by_number.status_code == 200 and by_number.json()["total"] == 0
    with _as(app, issue_token(scope="patient/Observation.rs", patient=mine)) as c:
        assert c.post("/fhir/Patient/$match", json=_match_body(family)).status_code == 403


# ------------------------------------------------------------------ $meta


def _codes(params: dict, kind: str) -> set[str]:
    meta = params["parameter"][0]["valueMeta"]
    return {c.get("code") for c in meta.get(kind, [])}


def test_type_and_system_meta_show_only_what_the_token_may_see(app, client, issue_token):
    mine_tag, other_tag = "mine-" + uuid.uuid4().hex[:8], "other-" + uuid.uuid4().hex[:8]
    mine, other = _patient(client, "MetaA"), _patient(client, "MetaB")
    for pid, tag in ((mine, mine_tag), (other, other_tag)):
        r = client.post("/fhir/Observation", json={
            "resourceType": "Observation", "status": "final", "meta": {"tag": [{"system": "urn:test", "code": tag}]},
            "code": {"text": "x"}, "subject": {"reference": f"Patient/{pid}"}})
        assert r.status_code == 201, r.text
    assert {mine_tag, other_tag} <= _codes(client.get("/fhir/Observation/$meta").json(), "tag")
    assert {mine_tag, other_tag} <= _codes(client.get("/fhir/$meta").json(), "tag")
    with _as(app, issue_token(scope="patient/*.rs", patient=mine)) as c:
        type_level = _codes(c.get("/fhir/Observation/$meta").json(), "tag")
        system_level = _codes(c.get("/fhir/$meta").json(), "tag")
    assert mine_tag in type_level and other_tag not in type_level
    assert mine_tag in system_level and other_tag not in system_level


# ------------------------------------------------------------------ user/ without fhirUser


def test_user_scope_without_fhir_user_reaches_nothing(app, client, issue_token):
    pid = _patient(client, "UserScope")
    with _as(app, issue_token(scope="user/*.rs", fhir_user=None)) as c:
        r = c.get("/fhir/Patient", params={"_id": pid})
        assert r.status_code == 403
        assert "fhirUser" in r.json()["issue"][0]["diagnostics"]
        assert c.get(f"/fhir/Patient/{pid}").status_code == 403
    with _as(app, issue_token(scope="user/*.rs", fhir_user="Practitioner/staff-1")) as c:
        assert c.get(f"/fhir/Patient/{pid}").status_code == 200
    with _as(app, issue_token(scope="user/*.rs", fhir_user=f"Patient/{pid}")) as c:
        assert c.get(f"/fhir/Patient/{pid}").status_code == 200
        assert c.get(f"/fhir/Patient/{_patient(client, 'Else')}").status_code == 404


# ------------------------------------------------------------------ revocation across processes


@pytest.fixture
def revocable_client(app):
    from fhir_server.auth.clients import add_client

    client_id = "revoker-" + uuid.uuid4().hex[:8]
    add_client(app.state.db.engine, {"client_id": client_id, "token_endpoint_auth_method": "none",
                                      "redirect_uris": ["http://127.0.0.1/cb"], "scope": "system/*.rs"})
    return client_id


def _other_process(settings, seconds: float):
    """A second app on the same database with its own engine and verified-token cache,
    wired like a server process (create_app + the plugins' attach)."""
    from fhir_server import plugins
    from fhir_server.api.app import create_app
    from fhir_server.storage.database import Database

    s = settings.model_copy(update={"auth_revocation_check_seconds": seconds})
    db = Database(s.resolved_database_url())
    other = create_app(s, db)
    plugins.attach(other, db, s)
    return other, db


@pytest.mark.parametrize("seconds", [0.0, 0.5])
def test_revocation_in_one_process_reaches_the_other(app, settings, issue_token, revocable_client, seconds):
    two, db = _other_process(settings, seconds)
    token = issue_token(scope="system/*.rs", client_id=revocable_client)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with TestClient(app, base_url="http://localhost") as a, TestClient(two, base_url="http://localhost") as b:
            assert b.get("/fhir/Patient", params={"_count": 1}, headers=headers).status_code == 200  # cached in "two"
            assert a.post("/auth/revoke", data={"token": token, "client_id": revocable_client}).status_code == 200
            assert a.get("/fhir/Patient", params={"_count": 1}, headers=headers).status_code == 401
            time.sleep(seconds)
            r = b.get("/fhir/Patient", params={"_count": 1}, headers=headers)
            assert r.status_code == 401 and "revoked" in r.json()["issue"][0]["diagnostics"]
    finally:
        db.dispose()


def test_user_scopes_are_not_issued_without_a_user(settings):
    from typer.testing import CliRunner

    from fhir_server.cli import app as cli

    env = {"FHIR_SERVER_DATABASE_URL": settings.database_url}
    refused = CliRunner().invoke(cli, ["token", "--scope", "user/*.rs"], env=env)
    assert refused.exit_code != 0 and "fhir-user" in refused.output
    issued = CliRunner().invoke(cli, ["token", "--scope", "user/*.rs", "--fhir-user", "Practitioner/p1"], env=env)
    assert issued.exit_code == 0, issued.output
    assert issued.output.strip().count(".") == 2


def test_authorization_server_grants_no_user_scopes_without_a_user(app, live_server):
    """SMART Backend Services: the client itself is the subject, no fhirUser - user/ scopes are left out of the grant."""
    from joserfc.jwk import RSAKey

    from fhir_server.auth.clients import add_client
    from tests.auth.test_oauth_flows import _token_request

    key = RSAKey.generate_key(2048, private=True, parameters={"kid": "no-user-1", "alg": "RS384"})
    client_id = "backend-" + uuid.uuid4().hex[:8]
    add_client(app.state.db.engine, {"client_id": client_id, "token_endpoint_auth_method": "private_key_jwt",
                                      "jwks": {"keys": [key.as_dict(private=False)]}, "scope": "system/Patient.rs user/*.rs"})
    r = _token_request(live_server, client_id, key, scope="system/Patient.rs user/*.rs")
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/Patient.rs"
