"""Tokens from an external OpenID Provider (an eID broker; here an Authlib-based OP in a
separate process) carrying a personnummer, PESEL or CPR claim: resolved to the right
Patient whatever the written form, unknown people refused or created, the OP's key
rotation followed through its JWKS."""

from __future__ import annotations

import base64
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
    newcomer_written = personnummer()[1]
    staff_canonical, staff_written = personnummer()
    pl_newborn = _pesel_2000s(female=True)
    twin_canonical, twin_written = personnummer()
    return {
        "newcomer": {"stored": None, "claims": {"personnummer": newcomer_written}},  # never created
        "se": {"stored": se_canonical, "claims": {"personnummer": se_written}},
        "pl": {"stored": pl, "claims": {"pesel": pl}},
        "dk": {"stored": dk_canonical, "claims": {"cpr": dk_written}},
        "stranger": {"stored": None, "claims": {"personnummer": stranger_written, "given_name": "Nils", "family_name": "Nykomling"}},
        "stranger_canonical": stranger_canonical,
        "staff": {"stored": staff_canonical, "claims": {"personnummer": staff_written}},
        "pl_newborn": {"stored": None, "claims": {"pesel": pl_newborn, "given_name": "Zofia", "family_name": "Nowak"}},
        "pl_newborn_canonical": pl_newborn,
        "twin": {"stored": None, "claims": {"personnummer": twin_written}},
        "twin_canonical": twin_canonical,
    }


def _pesel_2000s(female: bool) -> str:
    """A valid PESEL of someone born in 2000-2019 (month + 20), its sex digit fixed."""
    import random

    from stdnum.pl import pesel as _pesel

    body = f"{random.randint(0, 19):02d}{random.randint(1, 12) + 20:02d}{random.randint(1, 28):02d}{random.randint(0, 999):03d}{random.choice('02468' if female else '13579')}"
    return body + _pesel.calc_check_digit(body)


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
    httpx.post(f"{provider}/rotate", content="ES256")  # the provider moves to an ES256 key
    token = _op_token(provider, "se")  # signed with a kid the server has not seen
    assert '"alg":"ES256"' in base64.urlsafe_b64decode(token.split(".")[0] + "==").decode().replace(" ", "")
    assert c.get(f"/fhir/Patient/{ids['se']}", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_untrusted_provider_is_401(client, anonymous_client, provider):
    r = anonymous_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {_op_token(provider, 'se')}"})
    assert r.status_code == 401  # the session app trusts no external issuer


def _patients_with(c, system, value, headers):
    found = c.get("/fhir/Patient", params={"identifier": f"{system}|{value}", "_total": "accurate"}, headers=headers).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_issuer_audience_and_claim_mapping_are_configuration(settings, provider, tmp_path_factory, eid_app):
    """Per issuer: the audience its tokens must name (here one the provider does not use: 401)
    and the claim mapping, whose system may be any alias of the scheme (the personnummer's OID)."""
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    _, ids = eid_app
    elsewhere = _issuers_file(tmp_path_factory, provider, audience="https://api.example/fhir")
    app = build_app(settings.model_copy(update={"auth_issuers_file": elsewhere}))
    with TestClient(app) as c:
        r = c.get(f"/fhir/Patient/{ids['se']}", headers={"Authorization": f"Bearer {_op_token(provider, 'se')}"})
        assert r.status_code == 401 and "aud" in r.json()["issue"][0]["diagnostics"]

    path = tmp_path_factory.mktemp("issuers") / "alias.json"
    path.write_text(json.dumps([{"issuer": provider, "audience": TEST_AUDIENCE, "scope": "patient/*.rs",
                                 "identity_claims": {"personnummer": "urn:oid:1.2.752.129.2.1.3.1"}}]))
    app = build_app(settings.model_copy(update={"auth_issuers_file": str(path)}))
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {_op_token(provider, 'se')}"}
        assert [e["resource"]["id"] for e in c.get("/fhir/Patient", headers=h).json()["entry"]] == [ids["se"]]
        r = c.get("/fhir/Patient", headers={"Authorization": f"Bearer {_op_token(provider, 'pl')}"})  # no personnummer claim
        assert r.status_code == 401 and "personnummer" in r.json()["issue"][0]["diagnostics"]


def test_unknown_person_created_at_first_login(settings, provider, tmp_path_factory, people, auth_headers):
    """`unknown_person: create`: the Patient is made from the verified claims, birth date and
    sex read from the national number (a Swedish personnummer written YYMMDD-NNNN; a Polish
    PESEL of someone born in the 2000s: month + 20), once - the next login finds it."""
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    conf = _issuers_file(tmp_path_factory, provider, unknown_person="create")
    app = build_app(settings.model_copy(update={"auth_issuers_file": conf}))
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {_op_token(provider, 'stranger')}"}
        found = c.get("/fhir/Patient", headers=h).json()
        assert len(found["entry"]) == 1
        patient = found["entry"][0]["resource"]
        canonical = people["stranger_canonical"]
        assert patient["identifier"][0]["value"] == canonical
        assert patient["name"][0]["family"] == "Nykomling" and patient["name"][0]["given"] == ["Nils"]
        assert patient["birthDate"] == f"{canonical[:4]}-{canonical[4:6]}-{canonical[6:8]}"
        assert patient["gender"] == ("male" if int(canonical[10]) % 2 else "female")  # the serial's third digit

        again = {"Authorization": f"Bearer {_op_token(provider, 'stranger')}"}  # a later login: the same Patient
        assert [e["resource"]["id"] for e in c.get("/fhir/Patient", headers=again).json()["entry"]] == [patient["id"]]
        assert len(_patients_with(c, SE_PNR, canonical, auth_headers)) == 1

        pesel_value = people["pl_newborn_canonical"]
        h = {"Authorization": f"Bearer {_op_token(provider, 'pl_newborn')}"}
        entries = c.get("/fhir/Patient", headers=h).json()["entry"]
        assert len(entries) == 1
        polish = entries[0]["resource"]
        assert polish["identifier"][0]["value"] == pesel_value
        assert polish["birthDate"] == f"20{pesel_value[:2]}-{int(pesel_value[2:4]) - 20:02d}-{pesel_value[4:6]}"
        assert polish["gender"] == "female" and polish["name"][0]["family"] == "Nowak"
        assert [p["id"] for p in _patients_with(c, PL_PESEL, pesel_value, auth_headers)] == [polish["id"]]


def test_first_login_requests_arriving_together_create_one_patient(settings, provider, tmp_path_factory, people, auth_headers):
    """A portal fires several requests right after the first login; each misses the token
    cache and finds no Patient yet. They must all end with the same, single Patient."""
    import threading

    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    conf = _issuers_file(tmp_path_factory, provider, unknown_person="create")
    app = build_app(settings.model_copy(update={"auth_issuers_file": conf}))
    with TestClient(app) as c:
        tokens = [_op_token(provider, "twin") for _ in range(4)]  # distinct tokens: no cache hit
        barrier = threading.Barrier(len(tokens))
        results, errors = [], []

        def login(token):
            barrier.wait()
            try:
                results.append(app.state.auth_verifier.verify(token, TEST_AUDIENCE).patient)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=login, args=(t,)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(set(results)) == 1 and results[0]
        twin = people["twin_canonical"]
        assert [p["id"] for p in _patients_with(c, SE_PNR, twin, auth_headers)] == results[:1]


def test_staff_identity_resolves_to_the_practitioner(settings, provider, tmp_path_factory, people, auth_headers, eid_app):
    """`identity_type: Practitioner`: the national number names a Practitioner; the token
    becomes a user/ token with fhirUser Practitioner/<id>. Someone who is no Practitioner: 403."""
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    conf = _issuers_file(tmp_path_factory, provider, identity_type="Practitioner", scope="user/*.rs")
    app = build_app(settings.model_copy(update={"auth_issuers_file": conf}))
    with TestClient(app) as c:
        body = {"resourceType": "Practitioner", "identifier": [{"system": SE_PNR, "value": people["staff"]["stored"]}]}
        practitioner = c.post("/fhir/Practitioner", json=body, headers=auth_headers).json()["id"]
        h = {"Authorization": f"Bearer {_op_token(provider, 'staff', scope='user/*.rs')}"}
        assert c.get(f"/fhir/Practitioner/{practitioner}", headers=h).status_code == 200
        _, ids = eid_app
        assert c.get(f"/fhir/Patient/{ids['se']}", headers=h).status_code == 200  # staff: the whole type
        assert c.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=h).status_code == 403  # read-only scope
        nobody = c.get("/fhir/Patient", headers={"Authorization": f"Bearer {_op_token(provider, 'newcomer', scope='user/*.rs')}"})
        assert nobody.status_code == 403 and nobody.json()["issue"][0]["code"] == "forbidden"


def test_provider_keys_are_refetched_at_most_once_per_interval(settings, provider, tmp_path_factory, eid_app):
    """An unknown `kid` triggers a JWKS re-fetch, but at most once per
    auth_jwks_refetch_seconds: a flood of tokens with unknown kids cannot make the server
    hammer the provider. After the interval the rotated key is fetched and accepted."""
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    window = 6
    conf = _issuers_file(tmp_path_factory, provider)
    app = build_app(settings.model_copy(update={"auth_issuers_file": conf, "auth_jwks_refetch_seconds": window}))
    _, ids = eid_app
    with TestClient(app) as c:
        fetches = lambda: httpx.get(f"{provider}/stats").json()["jwks_fetches"]  # noqa: E731
        before = fetches()
        started = time.monotonic()
        assert c.get(f"/fhir/Patient/{ids['se']}", headers={"Authorization": f"Bearer {_op_token(provider, 'se')}"}).status_code == 200
        assert fetches() == before + 1
        httpx.post(f"{provider}/rotate", content="RS256")
        rotated = _op_token(provider, "se")
        for _ in range(5):
            r = c.get(f"/fhir/Patient/{ids['se']}", headers={"Authorization": f"Bearer {rotated}"})
            assert r.status_code == 401 and "no key" in r.json()["issue"][0]["diagnostics"], r.text
        assert time.monotonic() - started < window, "the machine was too slow for this test's interval"
        assert fetches() == before + 1  # no re-fetch inside the interval
        time.sleep(max(0.0, window - (time.monotonic() - started)) + 0.2)
        assert c.get(f"/fhir/Patient/{ids['se']}", headers={"Authorization": f"Bearer {rotated}"}).status_code == 200
        assert fetches() == before + 2


# ------------------------------------------------------------------ the authorize step logs in at the provider


@pytest.fixture(scope="module")
def login_app(settings, provider, tmp_path_factory, eid_app):
    from fastapi.testclient import TestClient

    from fhir_server.auth.clients import add_client
    from fhir_server.bootstrap import build_app

    conf = _issuers_file(tmp_path_factory, provider, login_client_id="fhir-server")
    app = build_app(settings.model_copy(update={"auth_issuers_file": conf}))
    client_id = "eid-portal"
    add_client(app.state.db.engine, {"client_id": client_id, "redirect_uris": ["https://portal.example/cb"],
                                      "token_endpoint_auth_method": "none", "scope": "openid fhirUser launch/patient patient/*.rs"})
    with TestClient(app, base_url="http://localhost", follow_redirects=False) as c:
        yield c, client_id, eid_app[1]


def _login_at_provider(c, provider, client_id, who):
    from .conftest import pkce

    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": "https://portal.example/cb", "state": "app-state",
              "scope": "openid fhirUser launch/patient patient/*.rs", "aud": TEST_AUDIENCE,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    r = c.get("/auth/authorize", params=params)
    assert r.status_code == 302 and r.headers["location"].startswith(f"{provider}/authorize?"), r.text
    httpx.post(f"{provider}/next-login", content=who)
    at_broker = httpx.get(r.headers["location"], follow_redirects=False)  # the person logs in with the eID app
    assert at_broker.status_code == 302, at_broker.text
    back = at_broker.headers["location"]
    assert back.startswith("http://localhost/auth/callback?")
    return c.get(back.removeprefix("http://localhost")), verifier


def test_authorize_logs_in_at_the_provider(login_app, provider):
    from urllib.parse import parse_qs, urlsplit

    c, client_id, ids = login_app
    r, verifier = _login_at_provider(c, provider, client_id, "pl")
    assert r.status_code == 302, r.text
    q = parse_qs(urlsplit(r.headers["location"]).query)
    assert r.headers["location"].startswith("https://portal.example/cb?") and q["state"] == ["app-state"]
    tok = c.post("/auth/token", data={"grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": "https://portal.example/cb",
                                      "client_id": client_id, "code_verifier": verifier}).json()
    assert tok["patient"] == ids["pl"]
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    assert c.get(f"/fhir/Patient/{ids['pl']}", headers=h).status_code == 200
    assert c.get(f"/fhir/Patient/{ids['se']}", headers=h).status_code == 404


def test_provider_login_of_unknown_person_is_refused(login_app, provider):
    c, client_id, _ = login_app
    r, _ = _login_at_provider(c, provider, client_id, "newcomer")
    assert r.status_code == 403 and "No patient record" in r.text


def test_callback_state_is_used_once(login_app, provider):
    c, client_id, _ = login_app
    r = c.get("/auth/callback", params={"code": "x", "state": "never-issued"})
    assert r.status_code == 400
