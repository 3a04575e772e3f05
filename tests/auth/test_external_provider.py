"""Tokens from an external OpenID Provider (an eID broker; here an Authlib-based OP in a
separate process) carrying a personnummer, PESEL or CPR claim: resolved to the right
Patient whatever the written form, unknown people refused or created, the OP's key
rotation followed through its JWKS."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_AUDIENCE

from .conftest import DK_CPR, PL_PESEL, SE_PNR, cpr, personnummer, pesel

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def people():
    se_canonical, se_written = personnummer()
    pl = pesel()
    dk_canonical, dk_written = cpr()
    stranger_canonical, stranger_written = personnummer()
    return {
        "se": {"stored": se_canonical, "claims": {"personnummer": se_written}},
        "pl": {"stored": pl, "claims": {"pesel": pl}},
        "dk": {"stored": dk_canonical, "claims": {"cpr": dk_written}},
        "stranger": {"stored": None, "claims": {"personnummer": stranger_written, "given_name": "Nils", "family_name": "Nykomling"}},
        "stranger_canonical": stranger_canonical,
    }


@pytest.fixture(scope="module")
def provider(tmp_path_factory, people):
    users = {k: {"password": f"pw-{k}", "claims": v["claims"]} for k, v in people.items() if isinstance(v, dict)}
    path = tmp_path_factory.mktemp("op") / "users.json"
    path.write_text(json.dumps(users))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.auth.oidc_provider", str(port), TEST_AUDIENCE, str(path)], cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"{url}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("the OpenID Provider did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _issuers_file(tmp_path_factory, provider, **extra) -> str:
    conf = [{"issuer": provider, "identity_claims": {"personnummer": SE_PNR, "pesel": PL_PESEL, "cpr": DK_CPR}, "scope": "patient/*.rs", **extra}]
    path = tmp_path_factory.mktemp("issuers") / "issuers.json"
    path.write_text(json.dumps(conf))
    return str(path)


@pytest.fixture(scope="module")
def eid_app(settings, provider, tmp_path_factory, people, auth_headers):
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    app = build_app(settings.model_copy(update={"auth_issuers_file": _issuers_file(tmp_path_factory, provider), "auth_jwks_refetch_seconds": 0}))
    with TestClient(app) as c:
        ids = {}
        for key, system in (("se", SE_PNR), ("pl", PL_PESEL), ("dk", DK_CPR)):
            body = {"resourceType": "Patient", "identifier": [{"system": system, "value": people[key]["stored"]}]}
            ids[key] = c.post("/fhir/Patient", json=body, headers=auth_headers).json()["id"]
        yield c, ids


def _op_token(provider: str, who: str, scope: str = "patient/*.rs") -> str:
    r = httpx.post(f"{provider}/token", data={"grant_type": "password", "username": who, "password": f"pw-{who}", "client_id": "portal", "scope": scope})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.mark.parametrize("who", ["se", "pl", "dk"])
def test_national_identity_resolves_to_the_patient(eid_app, provider, who):
    c, ids = eid_app
    h = {"Authorization": f"Bearer {_op_token(provider, who)}"}
    assert c.get(f"/fhir/Patient/{ids[who]}", headers=h).status_code == 200
    others = [pid for k, pid in ids.items() if k != who]
    for pid in others:
        assert c.get(f"/fhir/Patient/{pid}", headers=h).status_code == 404
    found = c.get("/fhir/Patient", headers=h).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [ids[who]]


def test_unknown_person_is_refused(eid_app, provider):
    c, _ = eid_app
    r = c.get("/fhir/Patient", headers={"Authorization": f"Bearer {_op_token(provider, 'stranger')}"})
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"


def test_rotated_provider_key_is_fetched(eid_app, provider):
    c, ids = eid_app
    assert c.get(f"/fhir/Patient/{ids['se']}", headers={"Authorization": f"Bearer {_op_token(provider, 'se')}"}).status_code == 200
    httpx.post(f"{provider}/rotate")
    token = _op_token(provider, "se")  # signed with a kid the server has not seen
    assert c.get(f"/fhir/Patient/{ids['se']}", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_untrusted_provider_is_401(client, anonymous_client, provider):
    r = anonymous_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {_op_token(provider, 'se')}"})
    assert r.status_code == 401  # the session app trusts no external issuer


def test_unknown_person_created_at_first_login(settings, provider, tmp_path_factory, people):
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    conf = _issuers_file(tmp_path_factory, provider, unknown_person="create")
    app = build_app(settings.model_copy(update={"auth_issuers_file": conf}))
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {_op_token(provider, 'stranger')}"}
        found = c.get("/fhir/Patient", headers=h).json()
        assert len(found["entry"]) == 1
        patient = found["entry"][0]["resource"]
        assert patient["identifier"][0]["value"] == people["stranger_canonical"]
        assert patient["name"][0]["family"] == "Nykomling"
        canonical = people["stranger_canonical"]
        assert patient["birthDate"] == f"{canonical[:4]}-{canonical[4:6]}-{canonical[6:8]}"
        assert patient["gender"] in ("male", "female")
