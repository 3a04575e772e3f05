"""Signing keys in the database and their rotation; protection off; CORS; rate limiting;
malformed tokens and headers (Hypothesis) never give a 500; `fhir-server client add`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.auth.test_resource_server import SEAM_REQUESTS, _send
from tests.conftest import TEST_AUDIENCE


@pytest.fixture(scope="module")
def db_keyed(settings):
    """An app whose built-in issuer keeps its keys in the database (no PEM file)."""
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    s = settings.model_copy(update={"auth_signing_key_file": "", "auth_jwks_refetch_seconds": 0})
    app = build_app(s)
    with TestClient(app) as c:
        yield app, s, c


def _db_token(app, s, scope="system/*.*"):
    from fhir_server.auth.tokens import cli_token

    return cli_token(s, app.state.db, scope, audience=TEST_AUDIENCE)


def test_keys_in_database_and_rotation(db_keyed):
    from fhir_server.auth.keys import rotate

    app, s, c = db_keyed
    old = _db_token(app, s)
    assert c.get("/fhir/Patient", params={"_count": 1}, headers={"Authorization": f"Bearer {old}"}).status_code == 200
    kids_before = {k["kid"] for k in c.get("/auth/jwks").json()["keys"]}
    new_kid = rotate(app.state.db.engine, s)  # as `fhir-server keys rotate` does, from another process
    new = _db_token(app, s)  # signed with a kid the running server has not loaded yet
    assert c.get("/fhir/Patient", params={"_count": 1}, headers={"Authorization": f"Bearer {new}"}).status_code == 200
    # the old key still verifies until its tokens expire
    fresh_old = old + ""
    assert c.get("/fhir/Patient", params={"_count": 2}, headers={"Authorization": f"Bearer {fresh_old}"}).status_code == 200
    kids_after = {k["kid"] for k in c.get("/auth/jwks").json()["keys"]}
    assert new_kid in kids_after and kids_before <= kids_after


@pytest.mark.parametrize("method,path,body", SEAM_REQUESTS)
def test_unknown_kid_is_401_then_a_rotated_key_is_accepted(db_keyed, method, path, body):
    """For every interaction of the seam test: a token naming a key the issuer never had is
    401; after `keys rotate` in another process, a token signed with the new key - a kid
    this process has not loaded yet - is accepted (the keys are re-read on an unknown kid)."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from fhir_server.auth.keys import rotate

    app, s, c = db_keyed
    pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Authorization": f"Bearer {_db_token(app, s)}"}).json()["id"]
    stranger = RSAKey.generate_key(2048, private=True, parameters={"kid": uuid.uuid4().hex})
    now = int(time.time())
    forged = jwt.encode({"alg": "RS256", "kid": stranger.kid},
                        {"iss": TEST_AUDIENCE, "aud": TEST_AUDIENCE, "sub": "x", "scope": "system/*.*", "exp": now + 600}, stranger)
    r = _send(c, method, path, body, pid, {"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r.text

    new_kid = rotate(app.state.db.engine, s)
    assert new_kid not in {k.kid for k in app.state.auth_keys.get().all.keys}  # not loaded here yet
    token = _db_token(app, s)
    r = _send(c, method, path, body, pid, {"Authorization": f"Bearer {token}"})
    assert r.status_code not in (401, 403) and r.status_code < 500, (r.status_code, r.text)


def test_cli_keys_rotate_and_client_add(db_keyed, tmp_path):
    app, s, c = db_keyed
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": s.resolved_database_url(), "FHIR_SERVER_AUTH_SIGNING_KEY_FILE": ""}
    out = subprocess.run([sys.executable, "-m", "fhir_server.cli", "keys", "rotate"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("new signing key"), out.stderr
    cid = f"app-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, "-m", "fhir_server.cli", "client", "add", cid, "--scope", "openid launch/patient patient/*.rs", "--redirect-uri", "https://app.example/cb"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    client = app.state.auth_server.clients.get(cid)
    assert client.redirect_uris == ["https://app.example/cb"] and client.auth_method == "none"
    bad = subprocess.run([*cmd[:5], "x", "--scope", "a", "--redirect-uri", "ftp://nope"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0


def test_auth_off_is_explicit_and_visible(settings):
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    app = build_app(settings.model_copy(update={"auth": "off"}))
    with TestClient(app) as c:
        assert c.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
        security = c.get("/fhir/metadata").json()["rest"][0]["security"]
        assert "OFF" in security["description"]


def test_cors(settings, auth_headers):
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    app = build_app(settings.model_copy(update={"cors_origins": "https://portal.example"}))
    with TestClient(app) as c:
        pre = c.options("/fhir/Patient", headers={"Origin": "https://portal.example", "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://portal.example"
        r = c.get("/fhir/metadata", headers={"Origin": "https://portal.example"})
        assert r.headers["access-control-allow-origin"] == "https://portal.example"
        assert r.json()["rest"][0]["security"]["cors"] is True
        token_pre = c.options("/auth/token", headers={"Origin": "https://portal.example", "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type"})
        assert token_pre.status_code == 200 and token_pre.headers["access-control-allow-origin"] == "https://portal.example"  # the app's PKCE code exchange
        assert "www-authenticate" in r.headers["access-control-expose-headers"].lower()  # a browser app sees why it got a 401
        evil = c.options("/fhir/Patient", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in evil.headers
        unauth = c.get("/fhir/Patient", headers={"Origin": "https://portal.example"})
        assert unauth.status_code == 401 and unauth.headers["access-control-allow-origin"] == "https://portal.example"


def test_no_cors_by_default(anonymous_client):
    r = anonymous_client.options("/fhir/Patient", headers={"Origin": "https://portal.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers


def test_rate_limit_per_client(settings, issue_token):
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    app = build_app(settings.model_copy(update={"rate_limit": "3/minute"}))
    a = {"Authorization": f"Bearer {issue_token('system/*.rs', client_id='busy')}"}
    b = {"Authorization": f"Bearer {issue_token('system/*.rs', client_id='calm')}"}
    with TestClient(app) as c:
        codes = [c.get("/fhir/Patient", params={"_count": 1}, headers=a).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/fhir/Patient", params={"_count": 1}, headers=a)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and r.json()["issue"][0]["code"] == "throttled"
        assert c.get("/fhir/Patient", params={"_count": 1}, headers=b).status_code == 200


_header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(
    _header_text,
    _header_text.map(lambda t: "Bearer " + t),
    st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=120), min_size=1, max_size=5)
      .map(lambda parts: "Bearer " + ".".join(parts)),
    st.binary(max_size=200).map(lambda b: "Bearer " + __import__("base64").urlsafe_b64encode(b).decode() + "." + "e30." + "x"),
))
def test_malformed_tokens_never_500(anonymous_client, header):
    r = anonymous_client.get("/fhir/Patient", headers={"Authorization": header})
    assert r.status_code == 401, (header, r.status_code, r.text)
    assert r.json()["resourceType"] == "OperationOutcome"


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.dictionaries(st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "scope", "patient", "fhirUser", "sub", "jti", "client_id"]),
                              st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3),
                                        st.booleans()), max_size=11))
def test_signed_tokens_with_odd_claims_never_500(anonymous_client, claims):
    """Correctly signed, but with claims of any type: 401 or an answer, never a 500."""
    import os as _os

    from joserfc import jwt

    from fhir_server.auth.keys import load_pem

    key = load_pem(_os.environ["FHIR_SERVER_AUTH_SIGNING_KEY_FILE"])
    token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
    r = anonymous_client.get("/fhir/Patient", params={"_count": 1}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (200, 401, 403), (claims, r.status_code, r.text)


@pytest.fixture(scope="module")
def oauth_client(app):
    from fastapi.testclient import TestClient

    from fhir_server.auth.clients import add_client

    add_client(app.state.db.engine, {"client_id": "fuzz-app", "redirect_uris": ["https://fuzz.example/cb"],
                                      "token_endpoint_auth_method": "none", "scope": "openid offline_access patient/*.rs"})
    with TestClient(app, base_url="http://localhost") as c:
        yield c


_token_text = st.one_of(
    _header_text,
    st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=80), min_size=1, max_size=5).map(".".join),
)


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=_token_text, hint=st.sampled_from([None, "access_token", "refresh_token", "x"]),
       grant=st.sampled_from(["refresh_token", "authorization_code", "client_credentials", "password", ""]))
def test_malformed_tokens_at_the_oauth_endpoints_never_500(oauth_client, token, hint, grant):
    """Introspection, revocation and the token endpoint with any token, code or client
    assertion text: an OAuth answer (200 inactive, 400, 401), never a 500."""
    form = {"token": token, "client_id": "fuzz-app", **({"token_type_hint": hint} if hint else {})}
    for endpoint in ("/auth/introspect", "/auth/revoke"):
        r = oauth_client.post(endpoint, data=form)
        if hint == "x":  # a hint of no known token type: Authlib's unsupported_token_type
            assert r.status_code in (400, 401) and r.json()["error"] == "unsupported_token_type", (endpoint, r.status_code, r.text)
        elif endpoint == "/auth/introspect":
            assert r.status_code == 200 and r.json() == {"active": False}, (token, r.status_code, r.text)
        else:
            assert r.status_code == 200, (token, r.status_code, r.text)  # RFC 7009 §2.2: also for an invalid token
    r = oauth_client.post("/auth/token", data={"grant_type": grant, "client_id": "fuzz-app", "refresh_token": token, "code": token,
                                               "code_verifier": token, "redirect_uri": "https://fuzz.example/cb",
                                               "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                               "client_assertion": token})
    assert r.status_code in (400, 401) and "error" in r.json(), (grant, token, r.status_code, r.text)


@pytest.mark.parametrize("update,message", [
    ({"auth": "false"}, "FHIR_SERVER_AUTH must be on or off"),
    ({"auth_unknown_person": "crate"}, "FHIR_SERVER_AUTH_UNKNOWN_PERSON must be refuse or create"),
    ({"auth_issuers_file": [{"issuer": "https://broker.example", "identity_type": "practitioner"}]}, "identity_type must be Patient or Practitioner"),
    ({"auth_issuers_file": [{"issuer": "https://broker.example", "unknown_person": "Create"}]}, "unknown_person must be refuse or create"),
    ({"auth_issuers_file": [{"issuer": "https://broker.example", "identity_claims": {"pesel": "urn:oid:9.9.9"}}]}, "no known national identifier system"),
    ({"auth_issuers_file": [{"issuer": "https://broker.example", "audiance": "x"}]}, "issuer entry 0"),
])
def test_a_security_setting_typo_stops_the_start(settings, tmp_path, update, message):
    """A typo in a security setting must not start a server that behaves otherwise than meant
    (protection silently on or off, staff logins made into patients, nobody created)."""
    import json

    from fhir_server.bootstrap import build_app

    if isinstance(update.get("auth_issuers_file"), list):
        path = tmp_path / "issuers.json"
        path.write_text(json.dumps(update["auth_issuers_file"]))
        update = {"auth_issuers_file": str(path)}
    with pytest.raises(ValueError, match=message):
        build_app(settings.model_copy(update=update))
