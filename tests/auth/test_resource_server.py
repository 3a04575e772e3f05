"""The resource server: which tokens are accepted, and what each token reaches (SMART scopes
at the authorisation seam, compiled into the SQL of every interaction)."""

from __future__ import annotations

import base64
import functools
import json
import time
import uuid

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import TEST_AUDIENCE, make_token

SEAM_REQUESTS = [
    ("GET", "/fhir/Patient/{pid}", None),
    ("GET", "/fhir/Patient/{pid}/_history/1", None),
    ("GET", "/fhir/Patient?_id={pid}", None),
    ("GET", "/fhir?_id={pid}", None),
    ("GET", "/fhir/Patient/{pid}/Observation", None),
    ("GET", "/fhir/Patient/{pid}/_history", None),
    ("GET", "/fhir/_history", None),
    ("POST", "/fhir/Patient", {"resourceType": "Patient"}),
    ("PUT", "/fhir/Patient/{pid}", {"resourceType": "Patient", "id": "{pid}"}),
    ("DELETE", "/fhir/Patient/{pid}", None),
    ("GET", "/fhir/Patient/{pid}/$everything", None),
    ("POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]}),
    ("GET", "/fhir/$export", None),
    ("POST", "/hl7v2", None),
]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _foreign_key_token(**claims) -> str:
    key = RSAKey.generate_key(2048, private=True, parameters={"kid": "attacker"})
    now = int(time.time())
    body = {"iss": TEST_AUDIENCE, "aud": TEST_AUDIENCE, "sub": "x", "scope": "system/*.*", "exp": now + 600, **claims}
    return jwt.encode({"alg": "RS256", "kid": "attacker"}, body, key)


@functools.lru_cache(maxsize=1)
def _bad_tokens() -> dict[str, str]:
    good = make_token()
    head, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["scope"] = "system/*.* extra"
    return {
        "wrong-audience": make_token(audience="http://elsewhere.example/fhir"),
        "expired": make_token(ttl=-600),
        "not-yet-valid": make_token(extra={"nbf": int(time.time()) + 3600}),
        "untrusted-issuer": make_token(extra={"iss": "http://elsewhere.example/fhir"}),
        "bad-signature": f"{head}.{body}.{sig[:-6]}AAAAAA",
        "tampered-claims": f"{head}.{_b64(claims)}.{sig}",
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{body}.",
        "foreign-key": _foreign_key_token(),
        "garbage": "not-a-jwt",
    }


@pytest.fixture(scope="module")
def pid(app, auth_headers):
    from fastapi.testclient import TestClient

    with TestClient(app, headers=auth_headers) as c:
        return c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]


def _send(c, method, path, body, pid, headers=None):
    if isinstance(body, dict):
        body = json.loads(json.dumps(body).replace("{pid}", pid))
    return c.request(method, path.format(pid=pid), json=body, headers=headers or {})


@pytest.mark.parametrize("method,path,body", SEAM_REQUESTS)
def test_every_interaction_needs_a_token(anonymous_client, pid, method, path, body):
    r = _send(anonymous_client, method, path, body, pid)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith('Bearer realm="') and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("kind", list(_bad_tokens()))
@pytest.mark.parametrize("method,path,body", SEAM_REQUESTS)
def test_bad_tokens_are_401(anonymous_client, pid, kind, method, path, body):
    token = _bad_tokens()[kind]
    r = _send(anonymous_client, method, path, body, pid, {"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, (kind, r.status_code, r.text)
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_a_token_for_another_base_says_which_base_this_is(anonymous_client):
    """The first thing a new user gets wrong: a token made for http://127.0.0.1:8080/fhir sent
    to the server under another name. The 401 says which base (audience) this server expects."""
    token = make_token(audience="http://127.0.0.1:8080/fhir")
    r = anonymous_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert f"--audience {TEST_AUDIENCE}" in r.json()["issue"][0]["diagnostics"]


def test_clock_skew_is_small(anonymous_client, pid):
    """exp and nbf get FHIR_SERVER_AUTH_CLOCK_SKEW (60 s) of leeway, no more."""
    ok = [make_token(ttl=-20), make_token(extra={"nbf": int(time.time()) + 20})]
    late = [make_token(ttl=-120), make_token(extra={"nbf": int(time.time()) + 120})]
    for token in ok:
        assert anonymous_client.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    for token in late:
        assert anonymous_client.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_open_endpoints_need_no_token(anonymous_client):
    for path in ("/health", "/ready"):
        assert anonymous_client.get(path).status_code == 200, path
    meta = anonymous_client.get("/fhir/metadata")
    assert meta.status_code == 200
    security = meta.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"].endswith("/auth/token") and uris["authorize"].endswith("/auth/authorize")
    conf = anonymous_client.get("/fhir/.well-known/smart-configuration").json()
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "client_credentials"} <= set(conf["grant_types_supported"])
    assert "permission-v2" in conf["capabilities"]
    assert conf["issuer"] == TEST_AUDIENCE
    jwks = anonymous_client.get("/auth/jwks").json()
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])
    assert anonymous_client.get("/fhir/.well-known/openid-configuration").json()["jwks_uri"].endswith("/auth/jwks")


def test_scope_missing_is_403_naming_the_scope(anonymous_client, pid):
    token = make_token("system/Observation.rs")
    r = anonymous_client.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    issue = r.json()["issue"][0]
    assert issue["code"] == "forbidden" and "system/Patient.r" in issue["diagnostics"]
    r = anonymous_client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Authorization": f"Bearer {make_token('system/*.rs')}"})
    assert r.status_code == 403 and "Patient.c" in r.json()["issue"][0]["diagnostics"]


def test_v1_and_v2_scopes(anonymous_client, pid):
    for scope in ("system/Patient.read", "system/Patient.r", "system/*.rs", "system/*.*", "system/Patient.cruds"):
        r = anonymous_client.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {make_token(scope)}"})
        assert r.status_code == 200, scope
    r = anonymous_client.get("/fhir/Patient", params={"_id": pid}, headers={"Authorization": f"Bearer {make_token('system/Patient.r')}"})
    assert r.status_code == 403  # read without search


# ------------------------------------------------------------------ patient/ tokens


@pytest.fixture(scope="module")
def two_patients(app, auth_headers):
    """Two patients, each with a lab and a vital-signs Observation; Bob's lab cites Ann's."""
    from fastapi.testclient import TestClient

    def obs(pid, category, ref_other=None):
        body = {"resourceType": "Observation", "status": "final", "code": {"text": category},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
                "subject": {"reference": f"Patient/{pid}"}}
        if ref_other:
            body["hasMember"] = [{"reference": ref_other}]
        return body

    with TestClient(app, headers=auth_headers) as c:
        ann = c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Ann"}]}).json()["id"]
        bob = c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Bob"}]}).json()["id"]
        ann_lab = c.post("/fhir/Observation", json=obs(ann, "laboratory")).json()["id"]
        ann_vital = c.post("/fhir/Observation", json=obs(ann, "vital-signs")).json()["id"]
        bob_lab = c.post("/fhir/Observation", json=obs(bob, "laboratory", f"Observation/{ann_lab}")).json()["id"]
    return {"ann": ann, "bob": bob, "ann_lab": ann_lab, "ann_vital": ann_vital, "bob_lab": bob_lab}


def _as(pid, scope="patient/*.rs"):
    return {"Authorization": f"Bearer {make_token(scope, patient=pid)}"}


def test_patient_token_reads_only_its_own_compartment(anonymous_client, two_patients):
    p = two_patients
    h = _as(p["ann"])
    assert anonymous_client.get(f"/fhir/Patient/{p['ann']}", headers=h).status_code == 200
    assert anonymous_client.get(f"/fhir/Observation/{p['ann_lab']}", headers=h).status_code == 200
    # Another patient's resources are not there for this token: 404, exactly like an unknown id.
    for path in (f"Patient/{p['bob']}", f"Observation/{p['bob_lab']}", f"Observation/{p['bob_lab']}/_history/1", f"Patient/{p['bob']}/_history"):
        r = anonymous_client.get(f"/fhir/{path}", headers=h)
        assert r.status_code == 404, (path, r.status_code)
    found = anonymous_client.get("/fhir/Observation", params={"_count": 100, "_total": "accurate"}, headers=h).json()
    ids = {e["resource"]["id"] for e in found.get("entry", [])}
    assert ids == {p["ann_lab"], p["ann_vital"]} and found["total"] == 2
    assert anonymous_client.get(f"/fhir/Patient/{p['bob']}/$everything", headers=h).status_code == 404
    everything = anonymous_client.get(f"/fhir/Patient/{p['ann']}/$everything", headers=h).json()
    assert {e["resource"]["id"] for e in everything["entry"]} == {p["ann"], p["ann_lab"], p["ann_vital"]}
    history = anonymous_client.get("/fhir/Observation/_history", params={"_count": 1000}, headers=h).json()
    assert {e["resource"]["subject"]["reference"] for e in history["entry"]} == {f"Patient/{p['ann']}"}


def test_include_of_another_patients_resource_is_left_out(anonymous_client, two_patients):
    p = two_patients
    h = _as(p["bob"])
    r = anonymous_client.get("/fhir/Observation", params={"_id": p["bob_lab"], "_include": "Observation:has-member"}, headers=h).json()
    assert [e["resource"]["id"] for e in r["entry"]] == [p["bob_lab"]]
    r = anonymous_client.get("/fhir/Observation", params={"_id": p["ann_lab"], "_revinclude": "Observation:has-member"}, headers=_as(p["ann"])).json()
    assert [e["resource"]["id"] for e in r["entry"]] == [p["ann_lab"]]
    # a system token sees both
    r = anonymous_client.get("/fhir/Observation", params={"_id": p["bob_lab"], "_include": "Observation:has-member"}, headers=_as(None, "system/*.rs")).json()
    assert {e["resource"]["id"] for e in r["entry"]} == {p["bob_lab"], p["ann_lab"]}


def test_chain_through_a_forbidden_type_is_403(anonymous_client, two_patients):
    h = _as(two_patients["ann"], "patient/Observation.rs")
    r = anonymous_client.get("/fhir/Observation", params={"subject:Patient.name": "Ann"}, headers=h)
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
    r = anonymous_client.get("/fhir/Observation", params={"_has:Observation:has-member:status": "final"}, headers=h)
    assert r.status_code == 200
    r = anonymous_client.get("/fhir/Patient", params={"_has:Observation:subject:status": "final"}, headers=_as(two_patients["ann"], "patient/Patient.rs"))
    assert r.status_code == 403


def test_granular_v2_scope(anonymous_client, two_patients):
    p = two_patients
    scope = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    h = _as(p["ann"], scope)
    found = anonymous_client.get("/fhir/Observation", headers=h).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [p["ann_lab"]]
    assert anonymous_client.get(f"/fhir/Observation/{p['ann_vital']}", headers=h).status_code == 404


def test_patient_token_writes_only_into_its_compartment(anonymous_client, two_patients):
    p = two_patients
    h = _as(p["ann"], "patient/*.cruds")
    mine = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": f"Patient/{p['ann']}"}}
    theirs = {**mine, "subject": {"reference": f"Patient/{p['bob']}"}}
    assert anonymous_client.post("/fhir/Observation", json=mine, headers=h).status_code == 201
    before = anonymous_client.get("/fhir/Observation", params={"subject": f"Patient/{p['bob']}", "_summary": "count"}, headers=_as(None, "system/*.rs")).json()["total"]
    r = anonymous_client.post("/fhir/Observation", json=theirs, headers=h)
    assert r.status_code == 403
    # another record's resource is answered exactly as an unknown id: no existence oracle
    unknown = anonymous_client.delete("/fhir/Observation/no-such-id", headers=h)
    foreign = anonymous_client.delete(f"/fhir/Observation/{p['bob_lab']}", headers=h)
    assert unknown.status_code == foreign.status_code == 404
    assert foreign.json()["issue"][0]["diagnostics"] == unknown.json()["issue"][0]["diagnostics"].replace("no-such-id", p["bob_lab"])
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    jp = {"Content-Type": "application/json-patch+json", **h}
    assert anonymous_client.patch("/fhir/Observation/no-such-id", json=patch, headers=jp).status_code == 404
    assert anonymous_client.patch(f"/fhir/Observation/{p['bob_lab']}", json=patch, headers=jp).status_code == 404
    assert anonymous_client.patch(f"/fhir/Observation/{p['bob_lab']}", json=patch, headers={**jp, "If-Match": 'W/"9"'}).status_code == 404
    # readable but not deletable (a granular v2 scope deletes vital signs only): 403
    vitals_only = _as(p["ann"], "patient/Observation.rs patient/Observation.d?category=vital-signs")
    assert anonymous_client.delete(f"/fhir/Observation/{p['ann_lab']}", headers=vitals_only).status_code == 403
    # a transaction with one forbidden entry is refused whole
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": mine, "request": {"method": "POST", "url": "Observation"}},
        {"resource": theirs, "request": {"method": "POST", "url": "Observation"}}]}
    mine_before = anonymous_client.get("/fhir/Observation", params={"_summary": "count"}, headers=h).json()["total"]
    r = anonymous_client.post("/fhir", json=bundle, headers=h)
    assert r.status_code == 403, r.text
    assert anonymous_client.get("/fhir/Observation", params={"_summary": "count"}, headers=h).json()["total"] == mine_before
    after = anonymous_client.get("/fhir/Observation", params={"subject": f"Patient/{p['bob']}", "_summary": "count"}, headers=_as(None, "system/*.rs")).json()["total"]
    assert after == before
    # a batch reports the forbidden entry and keeps the allowed one
    batch = {**bundle, "type": "batch"}
    out = anonymous_client.post("/fhir", json=batch, headers=h).json()
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["201", "403"]


def test_conditional_operations_only_see_what_the_token_sees(anonymous_client, two_patients):
    p = two_patients
    h = _as(p["ann"], "patient/*.cruds")
    system = _as(None, "system/*.rs")
    bob_lab = anonymous_client.get(f"/fhir/Observation/{p['bob_lab']}", headers=system).json()
    r = anonymous_client.delete("/fhir/Observation", params={"_id": p["bob_lab"]}, headers=h)
    assert r.status_code == 204  # no match among what the token sees
    mine = {"resourceType": "Observation", "status": "final", "code": {"text": "cond"}, "subject": {"reference": f"Patient/{p['ann']}"}}
    # conditional create: Bob's Observation is no match, so nothing of it comes back; a new one is made
    r = anonymous_client.post("/fhir/Observation", json=mine, headers={**h, "If-None-Exist": f"_id={p['bob_lab']}"})
    assert r.status_code == 201 and r.json()["id"] != p["bob_lab"]
    # conditional update and patch: Bob's is not matched, so not changed
    r = anonymous_client.put("/fhir/Observation", params={"_id": p["bob_lab"]}, json=mine, headers=h)
    assert r.status_code == 201 and r.json()["id"] != p["bob_lab"]
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    r = anonymous_client.patch("/fhir/Observation", params={"_id": p["bob_lab"]}, json=patch, headers={**h, "Content-Type": "application/json-patch+json"})
    assert r.status_code == 404
    # a conditional reference in a transaction resolves among what the token sees only
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**mine, "hasMember": [{"reference": f"Observation?_id={p['bob_lab']}"}]}, "request": {"method": "POST", "url": "Observation"}}]}
    assert anonymous_client.post("/fhir", json=bundle, headers=h).status_code == 412
    assert anonymous_client.get(f"/fhir/Observation/{p['bob_lab']}", headers=system).json() == bob_lab  # untouched


def test_export_needs_system_scope_and_the_same_token(anonymous_client, two_patients):
    h = _as(two_patients["ann"])
    r = anonymous_client.get("/fhir/$export", headers={**h, "Prefer": "respond-async"})
    assert r.status_code == 403
    r = anonymous_client.get("/fhir/$export", headers={"Authorization": f"Bearer {make_token('user/*.rs', fhir_user='Practitioner/x')}", "Prefer": "respond-async"})
    assert r.status_code == 403
    system = {"Authorization": f"Bearer {make_token('system/*.rs', client_id='exporter')}"}
    r = anonymous_client.get("/fhir/$export", params={"_type": "Patient"}, headers={**system, "Prefer": "respond-async"})
    assert r.status_code == 202
    status = r.headers["content-location"]
    assert anonymous_client.get(status).status_code == 401
    other = {"Authorization": f"Bearer {make_token('system/*.rs', client_id='someone-else')}"}
    assert anonymous_client.get(status, headers=other).status_code == 404
    assert anonymous_client.get(status, headers=system).status_code in (200, 202)


def test_a_patients_export_is_only_theirs_to_poll_download_and_cancel(app, settings, anonymous_client, two_patients):
    """A portal's patients share one client id: the job belongs to the token's subject and
    patient context, not to the client, and a file needs a scope that reads its type."""
    from fhir_server.jobs.runner import run_pending

    p = two_patients
    ann = _as(p["ann"])
    r = anonymous_client.get("/fhir/Patient/$export", headers={**ann, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    status = r.headers["content-location"]
    run_pending(app.state.db, settings)
    manifest = anonymous_client.get(status, headers=ann)
    assert manifest.status_code == 200, manifest.text
    files = {o["type"]: o["url"] for o in manifest.json()["output"]}
    assert "Patient" in files and "Observation" in files

    bob = _as(p["bob"])  # same client, same scopes, another patient
    assert anonymous_client.get(status, headers=bob).status_code == 404
    assert anonymous_client.get(files["Patient"], headers=bob).status_code == 404
    assert anonymous_client.delete(status, headers=bob).status_code == 404
    ann_obs_only = _as(p["ann"], "patient/Observation.rs")
    assert anonymous_client.get(files["Patient"], headers=ann_obs_only).status_code == 403
    assert anonymous_client.get(files["Observation"], headers=ann_obs_only).status_code == 200
    body = anonymous_client.get(files["Patient"], headers=ann)
    assert body.status_code == 200 and p["ann"] in body.text and p["bob"] not in body.text


def test_a_granular_scope_limits_what_a_patient_export_holds(app, settings, anonymous_client, two_patients):
    """SMART 2.0 granular scopes hold for $export as for search: a laboratory-only token
    exports the patient's laboratory Observations and nothing else."""
    from fhir_server.jobs.runner import run_pending

    p = two_patients
    lab_only = _as(p["ann"], "patient/Patient.rs patient/Observation.rs?category="
                             "http://terminology.hl7.org/CodeSystem/observation-category|laboratory")
    r = anonymous_client.get("/fhir/Patient/$export", headers={**lab_only, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    run_pending(app.state.db, settings)
    manifest = anonymous_client.get(r.headers["content-location"], headers=lab_only).json()
    files = {o["type"]: o["url"] for o in manifest["output"]}
    lines = anonymous_client.get(files["Observation"], headers=lab_only).text.splitlines()
    assert {json.loads(line)["id"] for line in lines} == {p["ann_lab"]}


def test_hl7v2_needs_a_system_write_scope(anonymous_client, two_patients):
    r = anonymous_client.post("/hl7v2", content=b"MSH|^~\\&|", headers=_as(two_patients["ann"], "patient/*.cruds"))
    assert r.status_code == 403


def test_user_token_of_a_patient_sees_their_compartment(anonymous_client, two_patients):
    p = two_patients
    token = make_token("user/*.rs", fhir_user=f"Patient/{p['ann']}")
    h = {"Authorization": f"Bearer {token}"}
    assert anonymous_client.get(f"/fhir/Observation/{p['ann_lab']}", headers=h).status_code == 200
    assert anonymous_client.get(f"/fhir/Observation/{p['bob_lab']}", headers=h).status_code == 404


def test_verified_tokens_are_cached(app, anonymous_client, pid):
    token = make_token("system/*.rs", subject=uuid.uuid4().hex)
    verifier = app.state.auth_verifier
    calls = []
    inner = verifier._verify

    def counting(*a):
        calls.append(1)
        return inner(*a)

    verifier._verify = counting
    try:
        for _ in range(3):
            assert anonymous_client.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        verifier._verify = inner
    assert len(calls) == 1
