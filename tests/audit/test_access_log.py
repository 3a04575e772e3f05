"""Each kind of request leaves its BALP AuditEvent with the right who, what and outcome."""

from __future__ import annotations

import base64
import uuid

import orjson
from fastapi.testclient import TestClient

from .conftest import agent, patients, rid


def _patient(client, family="Audit") -> str:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _observation(client, pid: str, code: str) -> str:
    r = client.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://example.org/audit-test", "code": code}]}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _one(events: list[dict]) -> dict:
    assert len(events) == 1, events
    return events[0]


def test_read_by_id_names_the_patient_and_who_read(client, audit_events):
    pid = _patient(client)
    h = rid()
    assert client.get(f"/fhir/Patient/{pid}", headers=h).status_code == 200  # the fast read path
    e = _one(audit_events(h["X-Request-Id"]))
    assert e["type"]["code"] == "rest" and e["subtype"][0]["code"] == "read" and e["action"] == "R"
    assert e["outcome"] == "0"
    assert patients(e) == {f"Patient/{pid}"}
    assert agent(e, "IRCP")["altId"] == "test" and agent(e, "IRCP")["requestor"] is True
    assert agent(e, "110153")["who"]["identifier"]["value"] == "test-client"
    assert e["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]


def test_read_of_clinical_data_names_its_patient(client, audit_events):
    pid = _patient(client)
    oid = _observation(client, pid, "read-1")
    h = rid()
    assert client.get(f"/fhir/Observation/{oid}", headers={**h, "Accept": "application/fhir+json"}).status_code == 200
    e = _one(audit_events(h["X-Request-Id"]))
    assert patients(e) == {f"Patient/{pid}"}
    assert {x["what"]["reference"] for x in e["entity"] if x.get("role", {}).get("code") == "4"} == {f"Observation/{oid}"}


def test_a_patients_read_names_every_patient_of_the_resource_without_a_lookup(app, client, issue_token, audit_events, monkeypatch):
    """The compartment check of a patient's read found the resource's patients already; the
    event names all of them (not only the reader) and the writer looks nothing up."""
    from fastapi.testclient import TestClient

    from fhir_server.audit import writer

    me, other = _patient(client), _patient(client)
    oid = client.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "shared"},
        "subject": {"reference": f"Patient/{me}"}, "performer": [{"reference": f"Patient/{other}"}]}).json()["id"]
    looked_up = []
    real = writer.patients_of_stored
    monkeypatch.setattr(writer, "patients_of_stored", lambda conn, pairs: looked_up.extend(pairs) or real(conn, pairs))
    h = rid()
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {issue_token('patient/*.rs', patient=me)}"}) as c:
        assert c.get(f"/fhir/Observation/{oid}", headers=h).status_code == 200
    e = _one(audit_events(h["X-Request-Id"]))
    assert patients(e) == {f"Patient/{me}", f"Patient/{other}"}
    assert ("Observation", oid) not in looked_up


def test_search_is_one_event_naming_each_returned_patient(client, audit_events):
    code = uuid.uuid4().hex
    p1, p2, p3 = _patient(client), _patient(client), _patient(client)
    for p in (p1, p2):
        _observation(client, p, code)
    h = rid()
    r = client.get(f"/fhir/Observation?code=http://example.org/audit-test|{code}&_include=Observation:subject", headers=h)
    assert r.status_code == 200 and r.json()["total"] == 2
    e = _one(audit_events(h["X-Request-Id"]))
    assert e["subtype"][0]["code"] == "search-type" and e["action"] == "E" and e["outcome"] == "0"
    assert patients(e) == {f"Patient/{p1}", f"Patient/{p2}"}  # not p3: no data of theirs was returned
    query = next(x for x in e["entity"] if x["role"]["code"] == "24")
    assert code in base64.b64decode(query["query"]).decode()


def test_writes_are_audited_in_their_transaction(client, audit_events):
    h = rid()
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Written"}]}, headers=h)
    pid = r.json()["id"]
    e = _one(audit_events(h["X-Request-Id"], flush=False))  # committed with the write, not buffered
    assert e["action"] == "C" and e["subtype"][0]["code"] == "create" and patients(e) == {f"Patient/{pid}"}
    h = rid()
    client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True}, headers=h)
    assert _one(audit_events(h["X-Request-Id"], flush=False))["action"] == "U"
    h = rid()
    oid = client.post("/fhir/Observation", headers=h, json={"resourceType": "Observation", "status": "final",
                      "code": {"text": "x"}, "subject": {"reference": f"Patient/{pid}"}}).json()["id"]
    assert patients(_one(audit_events(h["X-Request-Id"], flush=False))) == {f"Patient/{pid}"}
    h = rid()
    assert client.delete(f"/fhir/Observation/{oid}", headers=h).status_code == 200
    e = _one(audit_events(h["X-Request-Id"], flush=False))
    assert e["action"] == "D" and patients(e) == {f"Patient/{pid}"}
    assert any(x["what"]["reference"] == f"Observation/{oid}/_history/2" for x in e["entity"] if "reference" in x.get("what", {}))


def test_a_transaction_leaves_one_event_per_change(client, audit_events):
    h = rid()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"}, "subject": {"reference": "urn:uuid:p1"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    assert client.post("/fhir", json=bundle, headers=h).status_code == 200
    events = audit_events(h["X-Request-Id"])
    assert sorted(e["action"] for e in events) == ["C", "C"]


def test_a_refused_write_is_logged_as_a_failure(client, audit_events):
    h = rid()
    r = client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "not-a-status"}, headers=h)
    assert r.status_code in (400, 422)
    e = _one(audit_events(h["X-Request-Id"]))
    assert e["outcome"] == "4" and e["action"] == "C" and e["outcomeDesc"].startswith(f"HTTP {r.status_code}")


def test_refused_requests_are_logged(app, client, issue_token, audit_events):
    with TestClient(app, base_url="http://testserver") as anon:
        h = rid()
        assert anon.get("/fhir/Patient", headers=h).status_code == 401
        e = _one(audit_events(h["X-Request-Id"]))
        assert e["outcome"] == "4" and "401" in e["outcomeDesc"] and agent(e, "IRCP")["name"].startswith("anonymous")
        h = rid()
        # a parent's portal token, the child picked as the SMART patient context
        tok = issue_token("patient/Observation.rs", patient="child-1", fhir_user="RelatedPerson/parent-1")
        r = anon.get("/fhir/Practitioner", headers={**h, "Authorization": f"Bearer {tok}"})
        assert r.status_code == 403
        e = _one(audit_events(h["X-Request-Id"]))
        assert e["outcome"] == "4" and "403" in e["outcomeDesc"] and agent(e, "IRCP")["altId"] == "test"
        assert agent(e, "IRCP")["who"]["reference"] == "RelatedPerson/parent-1"
        assert agent(e, "PAT")["who"]["reference"] == "Patient/child-1"  # on whose behalf


def test_acting_for_header_is_recorded(client, audit_events):
    pid = _patient(client)
    h = rid()
    client.get(f"/fhir/Patient/{pid}", headers={**h, "X-Acting-For": f"Patient/{pid}"})
    e = _one(audit_events(h["X-Request-Id"]))
    assert agent(e, "PAT")["who"]["reference"] == f"Patient/{pid}"


def test_operations_and_export_are_logged(client, audit_events):
    pid = _patient(client)
    h = rid()
    assert client.get(f"/fhir/Patient/{pid}/$everything", headers=h).status_code == 200
    e = _one(audit_events(h["X-Request-Id"]))
    assert e["subtype"][0]["code"] == "operation" and e["action"] == "E" and patients(e) == {f"Patient/{pid}"}
    assert "$everything" in e["outcomeDesc"]
    h = rid()
    r = client.get("/fhir/$export", headers={**h, "Prefer": "respond-async", "Accept": "application/fhir+json"})
    assert r.status_code == 202, r.text
    e = _one(audit_events(h["X-Request-Id"]))
    assert e["type"]["code"] == "110106" and e["outcome"] == "0"


def test_hl7v2_message_is_logged(client, audit_events):
    h = rid()
    msg = "MSH|^~\\&|EHR|CLINIC|FHIR|SERVER|20240501120000||ZZZ^Z01|C-1|P|2.5\r"
    client.post("/hl7v2", content=msg.encode(), headers=h)
    e = _one(audit_events(h["X-Request-Id"]))
    assert e["type"]["code"] == "110107" and e["action"] == "C"


def test_login_at_the_token_endpoint_is_logged(app, audit_events):
    with TestClient(app, base_url="http://127.0.0.1") as anon:  # OAuth: https or loopback
        h = rid()
        r = anon.post("/auth/token", data={"grant_type": "client_credentials", "client_id": "no-such-client"}, headers=h)
        assert r.status_code in (400, 401)
        e = _one(audit_events(h["X-Request-Id"]))
        assert e["type"]["code"] == "110114" and e["subtype"][0]["code"] == "110122"
        assert e["outcome"] == "4" and agent(e, "110153")["who"]["identifier"]["value"] == "no-such-client"


def test_successful_backend_login_is_logged(app, audit_events):
    import time

    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from fhir_server.auth.clients import add_client

    key = RSAKey.generate_key(2048, private=True, parameters={"kid": "audit-1", "alg": "RS384"})
    client_id = f"audit-{uuid.uuid4().hex[:8]}"
    add_client(app.state.db.engine, {"client_id": client_id, "token_endpoint_auth_method": "private_key_jwt",
                                      "jwks": {"keys": [key.as_dict(private=False)]}, "scope": "system/*.rs"})
    with TestClient(app, base_url="http://127.0.0.1") as anon:  # OAuth: https or loopback
        endpoint = anon.get("/fhir/.well-known/smart-configuration").json()["token_endpoint"]
        now = int(time.time())
        assertion = jwt.encode({"alg": "RS384", "kid": "audit-1", "typ": "JWT"},
                               {"iss": client_id, "sub": client_id, "aud": endpoint, "exp": now + 200, "jti": uuid.uuid4().hex},
                               key, algorithms=["RS384"])
        h = rid()
        r = anon.post("/auth/token", headers=h, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                      "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion": assertion})
        assert r.status_code == 200, r.text
        e = _one(audit_events(h["X-Request-Id"]))
        assert e["outcome"] == "0" and agent(e, "110153")["who"]["identifier"]["value"] == client_id
        assert r.json()["access_token"] not in str(e)  # the token itself is never logged


def test_events_are_valid_r4_audit_events(client, audit_events):
    from fhir.resources.R4B.auditevent import AuditEvent

    pid = _patient(client)
    h = rid()
    client.get(f"/fhir/Patient?_id={pid}", headers=h)
    for e in audit_events(h["X-Request-Id"]):
        AuditEvent.model_validate(e)  # raises on a shape R4 does not allow


def test_hl7v2_over_mllp_is_logged_with_its_writes(settings, auth_headers):
    import socket

    from fhir_server.bootstrap import build_app
    from fhir_server.hl7v2.listener import send_mllp

    from .conftest import logged_events

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    app = build_app(settings.model_copy(update={"mllp_port": port, "mllp_host": "127.0.0.1"}))
    family = f"Mllp{uuid.uuid4().hex[:6]}"
    msg = "\r".join([
        f"MSH|^~\\&|EHR|CLINIC|FHIR|SERVER|20240501120000||ADT^A01^ADT_A01|{uuid.uuid4().hex[:12]}|P|2.5",
        "EVN|A01|20240501120000",
        f"PID|1||44051401458^^^&urn:oid:2.16.840.1.113883.3.4424.1.1.616&ISO^NNPOL||{family}^Anna||19440514|F",
        "PV1|1|O"]) + "\r"
    with TestClient(app, headers=auth_headers) as client:
        assert "MSA|AA|" in send_mllp("127.0.0.1", port, msg)
        pid = client.get("/fhir/Patient", params={"family": family}).json()["entry"][0]["resource"]["id"]
        app.state.audit_writer.flush()
        events = logged_events(app.state.db)
    mine = [e for e in events if any(a.get("altId", "").startswith("mllp:") for a in e["agent"])]
    imports = [e for e in mine if e["type"]["code"] == "110107"]
    assert imports and imports[-1]["outcome"] == "0" and "ACK AA" in imports[-1]["outcomeDesc"]
    assert any(e["action"] == "C" and patients(e) == {f"Patient/{pid}"} for e in mine)  # the Patient it created


def test_a_refused_request_carrying_a_nul_is_logged_and_does_not_block_the_log(client, audit_events):
    """PostgreSQL text cannot hold U+0000: the event of a request refused for holding one
    stores it as U+FFFD, and the events after it are written as usual."""
    h = rid()
    assert client.get("/fhir/Patient/ab%00cd", headers=h).status_code in (400, 404)
    e = _one(audit_events(h["X-Request-Id"]))
    assert e["outcome"] != "0"
    assert "\x00" not in orjson.dumps(e).decode()
    pid = _patient(client, "AfterNul")
    h = rid()
    assert client.get(f"/fhir/Patient/{pid}", headers=h).status_code == 200
    assert patients(_one(audit_events(h["X-Request-Id"]))) == {f"Patient/{pid}"}
