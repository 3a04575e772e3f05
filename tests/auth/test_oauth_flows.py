"""Real OAuth flows against the built-in authorization server: a SMART app (authorization
code + PKCE through the development login), SMART Backend Services (private_key_jwt with a
key pair made here) running a bulk $export over HTTP, refresh-token rotation,
introspection and revocation, and the `fhir-server token` command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.conftest import TEST_AUDIENCE

from .conftest import SE_PNR, personnummer, pkce


# ------------------------------------------------------------------ backend services


def _assertion(key, alg: str, client_id: str, aud: str, exp_in: int = 240, jti: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in, "jti": jti or uuid.uuid4().hex}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


@pytest.fixture(scope="module")
def backend_client(app):
    from fhir_server.auth.clients import add_client

    key = RSAKey.generate_key(2048, private=True, parameters={"kid": "backend-1", "alg": "RS384"})
    client_id = f"registry-{uuid.uuid4().hex[:8]}"
    add_client(app.state.db.engine, {"client_id": client_id, "token_endpoint_auth_method": "private_key_jwt",
                                      "jwks": {"keys": [key.as_dict(private=False)]}, "scope": "system/*.rs"})
    return client_id, key


def _token_request(base: str, client_id: str, key, alg="RS384", scope="system/*.rs", **kw):
    conf = httpx.get(f"{base}/.well-known/smart-configuration").json()
    origin = base.rsplit("/fhir", 1)[0]
    form = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _assertion(key, alg, client_id, conf["token_endpoint"], **kw)}
    return httpx.post(f"{origin}/auth/token", data=form)


def test_backend_services_export(app, live_server, backend_client, auth_headers):
    client_id, key = backend_client
    assert httpx.post(f"{live_server}/Patient", json={"resourceType": "Patient"}, headers=auth_headers).status_code == 201
    r = _token_request(live_server, client_id, key, scope="system/*.rs system/Patient.cruds")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/*.rs"  # narrowed to what the client may have
    assert "refresh_token" not in body
    h = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.post(f"{live_server}/Patient", json={"resourceType": "Patient"}, headers=h).status_code == 403
    r = httpx.get(f"{live_server}/$export", params={"_type": "Patient"}, headers={**h, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    status = live_server + r.headers["content-location"].split("/fhir", 1)[1]
    from fhir_server.jobs.runner import run_pending

    for _ in range(20):
        polled = httpx.get(status, headers=h)
        if polled.status_code == 200:
            break
        assert polled.status_code == 202, polled.text
        run_pending(app.state.db, app.state.settings, kinds=["export"])
    manifest = polled.json()
    assert manifest["requiresAccessToken"] is True and manifest["output"]
    url = live_server + manifest["output"][0]["url"].split("/fhir", 1)[1]
    assert httpx.get(url).status_code == 401  # the file needs the token too
    ndjson = httpx.get(url, headers=h)
    assert ndjson.status_code == 200 and ndjson.text.count("\n") == manifest["output"][0]["count"]


def test_backend_assertion_rules(live_server, backend_client):
    client_id, key = backend_client
    jti = uuid.uuid4().hex
    assert _token_request(live_server, client_id, key, jti=jti).status_code == 200
    def refused(r):  # RFC 6749 §5.2: invalid_client, 400 unless the client used the Authorization header
        return r.status_code == 400 and r.json()["error"] == "invalid_client"

    assert refused(_token_request(live_server, client_id, key, jti=jti))  # a jti is used once
    same_key_any_alg = RSAKey.import_key({k: v for k, v in key.as_dict(private=True).items() if k != "alg"})
    assert refused(_token_request(live_server, client_id, same_key_any_alg, alg="RS256"))  # SMART: RS384 or ES384
    assert refused(_token_request(live_server, client_id, key, exp_in=3600))  # at most five minutes ahead
    stranger = RSAKey.generate_key(2048, private=True, parameters={"kid": "backend-1"})
    assert refused(_token_request(live_server, client_id, stranger))
    assert refused(_token_request(live_server, "nobody", key))


def test_backend_es384(live_server, app):
    from fhir_server.auth.clients import add_client

    key = ECKey.generate_key("P-384", private=True, parameters={"kid": "ec-1"})
    client_id = f"ehr-{uuid.uuid4().hex[:8]}"
    add_client(app.state.db.engine, {"client_id": client_id, "jwks": {"keys": [key.as_dict(private=False)]}, "scope": "system/*.*"})
    r = _token_request(live_server, client_id, key, alg="ES384", scope="system/Patient.rs")
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    found = httpx.get(f"{live_server}/Patient", params={"_count": 1}, headers={"Authorization": f"Bearer {token}"})
    assert found.status_code == 200


class _JwksHost:
    """A backend client's JWKS URL: a real HTTP server on a loopback port, counting fetches."""

    def __init__(self, jwks: dict):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        host = self
        self.jwks = jwks
        self.fetches = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                host.fetches += 1
                body = json.dumps(host.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_backend_client_keys_from_a_jwks_url(settings):
    """`fhir-server client add ID --jwks-url URL`: the client's keys are fetched from its URL,
    cached (a second token does not fetch again), and fetched again when an assertion names a
    kid the cached set lacks (the client rotated its key); an unknown key stays refused."""
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    key_a = RSAKey.generate_key(2048, private=True, parameters={"kid": f"a-{uuid.uuid4().hex[:6]}", "alg": "RS384"})
    host = _JwksHost({"keys": [key_a.as_dict(private=False)]})
    client_id = f"ehr-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": settings.resolved_database_url()}
    added = subprocess.run([sys.executable, "-m", "fhir_server.cli", "client", "add", client_id, "--scope", "system/Patient.rs",
                            "--jwks-url", host.url], env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0 and "private_key_jwt" in added.stdout, added.stderr
    app = build_app(settings.model_copy(update={"auth_jwks_refetch_seconds": 0}))
    try:
        with TestClient(app, base_url="http://localhost") as c:
            endpoint = c.get("/fhir/.well-known/smart-configuration").json()["token_endpoint"]

            def token(key):
                form = {"grant_type": "client_credentials", "scope": "system/Patient.rs",
                        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        "client_assertion": _assertion(key, "RS384", client_id, endpoint)}
                return c.post("/auth/token", data=form)

            first = token(key_a)
            assert first.status_code == 200, first.text
            assert token(key_a).status_code == 200 and host.fetches == 1  # cached
            key_b = RSAKey.generate_key(2048, private=True, parameters={"kid": f"b-{uuid.uuid4().hex[:6]}", "alg": "RS384"})
            host.jwks = {"keys": [key_b.as_dict(private=False)]}  # the client rotates its key
            rotated = token(key_b)
            assert rotated.status_code == 200, rotated.text
            assert host.fetches == 2
            stranger = RSAKey.generate_key(2048, private=True, parameters={"kid": "stranger", "alg": "RS384"})
            refused = token(stranger)
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_client"
            h = {"Authorization": f"Bearer {rotated.json()['access_token']}"}
            assert c.get("/fhir/Patient", params={"_count": 1}, headers=h).status_code == 200
    finally:
        host.close()


def test_clients_registered_in_configuration(settings, tmp_path):
    """FHIR_SERVER_AUTH_CLIENTS_FILE: a JSON list of clients (RFC 7591 names); a plain
    `client_secret` there is kept only as its hash. A confidential client gets a token with
    HTTP Basic authentication; a wrong secret is invalid_client (401, RFC 6749 §5.2)."""
    import json

    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    path = tmp_path / "clients.json"
    path.write_text(json.dumps([{"client_id": "lab-feed", "client_secret": "s3cret-value", "token_endpoint_auth_method": "client_secret_basic",
                                 "grant_types": ["client_credentials"], "scope": "system/Observation.cruds"}]))
    app = build_app(settings.model_copy(update={"auth_clients_file": str(path)}))
    with TestClient(app, base_url="http://localhost") as c:
        assert "client_secret" not in app.state.auth_server.clients.get("lab-feed").meta
        r = c.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/Observation.rs system/Patient.rs"},
                   auth=("lab-feed", "s3cret-value"))
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "system/Observation.rs"  # narrowed to the registration
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert c.get("/fhir/Observation", params={"_count": 1}, headers=h).status_code == 200
        assert c.get("/fhir/Patient", params={"_count": 1}, headers=h).status_code == 403
        wrong = c.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("lab-feed", "guess"))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


# ------------------------------------------------------------------ SMART app: authorization code + PKCE


@pytest.fixture(scope="module")
def dev_app(settings):
    from fastapi.testclient import TestClient

    from fhir_server.bootstrap import build_app

    app = build_app(settings.model_copy(update={"dev_login": True}))
    with TestClient(app, base_url="http://localhost", follow_redirects=False) as c:
        yield app, c


@pytest.fixture(scope="module")
def portal(dev_app, auth_headers):
    from fhir_server.auth.clients import add_client

    app, c = dev_app
    client_id = f"portal-{uuid.uuid4().hex[:8]}"
    add_client(app.state.db.engine, {"client_id": client_id, "redirect_uris": ["https://portal.example/cb"],
                                      "token_endpoint_auth_method": "none",
                                      "scope": "openid fhirUser launch/patient offline_access patient/*.rs"})
    canonical, written = personnummer()
    pid = c.post("/fhir/Patient", headers=auth_headers, json={"resourceType": "Patient", "identifier": [{"system": SE_PNR, "value": canonical}]}).json()["id"]
    other = c.post("/fhir/Patient", headers=auth_headers, json={"resourceType": "Patient"}).json()["id"]
    return {"client_id": client_id, "pid": pid, "other": other, "written": written}


def _authorize(c, portal, challenge, state="s-1", scope="openid fhirUser launch/patient offline_access patient/*.rs", method="S256"):
    params = {"response_type": "code", "client_id": portal["client_id"], "redirect_uri": "https://portal.example/cb",
              "scope": scope, "state": state, "aud": TEST_AUDIENCE}
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method=method)
    return params


def _login(c, params, value, system=SE_PNR):
    page = c.get("/auth/authorize", params=params)
    assert page.status_code == 200 and "TEST LOGIN" in page.text, page.text
    return c.post("/auth/authorize", data={**params, "login_system": system, "login_value": value})


def test_authorization_code_with_pkce(dev_app, portal):
    app, c = dev_app
    verifier, challenge = pkce()
    params = _authorize(c, portal, challenge)
    r = _login(c, params, portal["written"])  # a written form other than the stored one
    assert r.status_code == 302, r.text
    back = urlsplit(r.headers["location"])
    q = parse_qs(back.query)
    assert back.netloc == "portal.example" and q["state"] == ["s-1"]
    code = q["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "https://portal.example/cb", "client_id": portal["client_id"]}
    wrong = c.post("/auth/token", data={**form, "code_verifier": pkce()[0]})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    r = c.post("/auth/token", data={**form, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    tok = r.json()
    assert tok["patient"] == portal["pid"] and tok["refresh_token"] and tok["id_token"]
    again = c.post("/auth/token", data={**form, "code_verifier": verifier})
    assert again.status_code == 400  # a code is used once
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    assert c.get(f"/fhir/Patient/{portal['pid']}", headers=h).status_code == 200
    assert c.get(f"/fhir/Patient/{portal['other']}", headers=h).status_code == 404

    # refresh tokens rotate: the old one stops working
    r = c.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": portal["client_id"]})
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert fresh["refresh_token"] != tok["refresh_token"] and fresh["patient"] == portal["pid"]
    r = c.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": portal["client_id"]})
    assert r.status_code == 400

    # introspection and revocation
    info = c.post("/auth/introspect", data={"token": fresh["access_token"], "client_id": portal["client_id"]}).json()
    assert info["active"] is True and info["patient"] == portal["pid"] and info["client_id"] == portal["client_id"]
    assert c.post("/auth/revoke", data={"token": fresh["access_token"], "client_id": portal["client_id"]}).status_code == 200
    assert c.get(f"/fhir/Patient/{portal['pid']}", headers={"Authorization": f"Bearer {fresh['access_token']}"}).status_code == 401
    info = c.post("/auth/introspect", data={"token": fresh["access_token"], "client_id": portal["client_id"]}).json()
    assert info["active"] is False


def _code_flow(c, portal, **extra) -> dict:
    verifier, challenge = pkce()
    r = _login(c, {**_authorize(c, portal, challenge), **extra}, portal["written"])
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    r = c.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": "https://portal.example/cb",
                                    "client_id": portal["client_id"], "code_verifier": verifier})
    assert r.status_code == 200, r.text
    return r.json()


def test_introspection_and_revocation_are_for_the_clients_own_tokens(dev_app, portal):
    """RFC 7662 / RFC 7009: a client learns about and revokes only its own tokens; a refresh
    token can be introspected and revoked too, and a revoked one no longer refreshes."""
    from fhir_server.auth.clients import add_client

    app, c = dev_app
    tok = _code_flow(c, portal)
    other = f"other-{uuid.uuid4().hex[:8]}"
    add_client(app.state.db.engine, {"client_id": other, "redirect_uris": ["https://other.example/cb"],
                                      "token_endpoint_auth_method": "none", "scope": "openid patient/*.rs"})
    mine = {"client_id": portal["client_id"]}
    for token in (tok["access_token"], tok["refresh_token"]):
        foreign = c.post("/auth/introspect", data={"token": token, "client_id": other})
        assert foreign.status_code == 200 and foreign.json() == {"active": False}, foreign.text
        assert c.post("/auth/revoke", data={"token": token, "client_id": other}).status_code == 200  # RFC 7009 §2.2
    stolen = c.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": other})
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"  # a refresh token works for its client only
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    assert c.get(f"/fhir/Patient/{portal['pid']}", headers=h).status_code == 200  # another client's revoke did nothing
    info = c.post("/auth/introspect", data={"token": tok["refresh_token"], "token_type_hint": "refresh_token", **mine}).json()
    assert info["active"] is True and info["client_id"] == portal["client_id"] and "patient/*.rs" in info["scope"]

    assert c.post("/auth/revoke", data={"token": tok["refresh_token"], "token_type_hint": "refresh_token", **mine}).status_code == 200
    assert c.post("/auth/introspect", data={"token": tok["refresh_token"], **mine}).json() == {"active": False}
    r = c.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], **mine})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_id_token_names_the_user_and_carries_the_nonce(dev_app, portal):
    """OpenID Connect Core 3.1.3.6/3.1.3.7: the ID token is signed by the issuer's JWKS key,
    for the client (aud), with the request's nonce; SMART: fhirUser is the user's absolute URL."""
    from joserfc.jwk import KeySet

    _, c = dev_app
    assert "sso-openid-connect" in c.get("/fhir/.well-known/smart-configuration").json()["capabilities"]
    nonce = uuid.uuid4().hex
    tok = _code_flow(c, portal, nonce=nonce)
    claims = jwt.decode(tok["id_token"], KeySet.import_key_set(c.get("/auth/jwks").json())).claims
    assert claims["iss"] == TEST_AUDIENCE and claims["aud"] == portal["client_id"] and claims["nonce"] == nonce
    assert claims["fhirUser"] == f"{TEST_AUDIENCE}/Patient/{portal['pid']}" and isinstance(claims["auth_time"], int)
    assert "nonce" not in jwt.decode(_code_flow(c, portal)["id_token"], KeySet.import_key_set(c.get("/auth/jwks").json())).claims


def test_pkce_is_required_and_s256_only(dev_app, portal):
    _, c = dev_app
    r = c.get("/auth/authorize", params=_authorize(c, portal, None))
    assert r.status_code == 302 and "error=invalid_request" in r.headers["location"]
    verifier, _ = pkce()
    r = c.get("/auth/authorize", params=_authorize(c, portal, verifier, method="plain"))
    assert r.status_code == 302 and "error=" in r.headers["location"]


def test_unknown_redirect_uri_is_not_followed(dev_app, portal):
    _, c = dev_app
    params = {**_authorize(c, portal, pkce()[1]), "redirect_uri": "https://evil.example/cb"}
    r = c.get("/auth/authorize", params=params)
    assert r.status_code == 400 and "location" not in r.headers


def test_unknown_person_is_refused(dev_app, portal):
    _, c = dev_app
    r = _login(c, _authorize(c, portal, pkce()[1]), personnummer()[1])
    assert r.status_code == 400 and "No patient record" in r.text


def test_plain_http_to_a_public_host_is_a_400_not_a_500(app):
    """RFC 6749 section 3.1: the token endpoint needs TLS; over plain http to a host that is
    not loopback the answer is an OAuth error, never an internal error."""
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://fhir.example.org") as c:
        r = c.post("/auth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "insecure_transport"


def test_dev_login_is_off_by_default(client):
    r = client.post("/auth/authorize", data={"login_system": SE_PNR, "login_value": "x"})
    assert r.status_code == 403


# ------------------------------------------------------------------ fhir-server token


def test_cli_token(settings, client, anonymous_client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": settings.resolved_database_url()}
    cmd = [sys.executable, "-m", "fhir_server.cli", "token", "--scope", "patient/*.rs", "--patient", pid]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert anonymous_client.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert anonymous_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).json()["total"] == 1


def _claims(token: str) -> dict:
    import base64
    import json

    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def _cli(*args, database_url: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "FHIR_SERVER_DATABASE_URL"}
    if database_url:
        env["FHIR_SERVER_DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "fhir_server.cli", "token", *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_token_options(settings, client, anonymous_client):
    """`fhir-server token --national-id SYSTEM|VALUE` (any written form) finds the patient in
    the database named by `--database-url`; `--ttl` sets the lifetime; `--fhir-user` the user;
    wrong input is a one-line error and a non-zero exit, never a traceback."""
    canonical, written = personnummer()
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": SE_PNR, "value": canonical}]}).json()["id"]
    url = settings.resolved_database_url()

    out = _cli("--scope", "patient/*.rs", "--national-id", f"{SE_PNR}|{written}", "--ttl", "120", "--database-url", url)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    claims = _claims(token)
    assert claims["patient"] == pid and claims["fhirUser"] == f"Patient/{pid}" and claims["exp"] - claims["iat"] == 120
    h = {"Authorization": f"Bearer {token}"}
    assert [e["resource"]["id"] for e in anonymous_client.get("/fhir/Patient", headers=h).json()["entry"]] == [pid]

    out = _cli("--scope", "user/*.rs", "--fhir-user", "Practitioner/p-1")
    assert out.returncode == 0, out.stderr
    assert _claims(out.stdout.strip())["fhirUser"] == "Practitioner/p-1"

    unknown = _cli("--scope", "patient/*.rs", "--national-id", f"{SE_PNR}|{personnummer()[1]}", "--database-url", url)
    assert unknown.returncode == 1 and "no Patient has the national identifier" in unknown.stderr and "Traceback" not in unknown.stderr
    for bad in (["--national-id", "19121212-1212"], ["--national-id", f"{SE_PNR}|not-a-number"], ["--scope", "user/*.rs"]):
        out = _cli(*bad, "--database-url", url)
        assert out.returncode == 2 and "Traceback" not in out.stderr and out.stdout == "", (bad, out.stderr)
