"""Creates answered in front of the router (api/fast_create.py) must be the creates the
app's own route gives - status, headers, body, what is stored and audited - for valid
and invalid requests alike, and must leave every other POST to the app."""

from __future__ import annotations

import json
import random
import re

import pytest

from fhir_server.api import fast_create

IGNORED = {"date", "x-request-id", "server", "last-modified", "content-length"}
ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def taken(monkeypatch):
    """How many requests the fast path answered."""
    seen = []
    original = fast_create.FastCreate._create

    async def counting(self, res_type, scope, receive, send):
        seen.append(res_type)
        return await original(self, res_type, scope, receive, send)

    monkeypatch.setattr(fast_create.FastCreate, "_create", counting)
    return seen


def _normal(r) -> tuple:
    """An answer with its new id, instants and request id made comparable."""
    text = ID.sub("ID", INSTANT.sub("INSTANT", r.text))
    headers = {k: ID.sub("ID", v) for k, v in r.headers.items() if k not in IGNORED}
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    return r.status_code, headers, body


def _both(client, monkeypatch, taken, path: str, content: bytes, headers: dict) -> tuple:
    monkeypatch.setattr(fast_create, "ENABLED", True)
    before = len(taken)
    fast = client.post(path, content=content, headers=headers)
    fast_taken = len(taken) - before
    monkeypatch.setattr(fast_create, "ENABLED", False)
    routed = client.post(path, content=content, headers=headers)
    assert len(taken) - before == fast_taken  # the router answered the second
    return fast, routed, fast_taken


JSON = {"Content-Type": "application/fhir+json"}
CASES = [
    ("valid", "/fhir/Patient", b'{"resourceType":"Patient","name":[{"family":"Fast"}],"birthDate":"1970-01-01"}', JSON),
    ("decimal kept", "/fhir/Observation",
     b'{"resourceType":"Observation","status":"final","code":{"text":"w"},"valueQuantity":{"value":72.50}}', JSON),
    ("client id ignored", "/fhir/Patient", b'{"resourceType":"Patient","id":"mine","meta":{"versionId":"7"}}', JSON),
    ("plain json", "/fhir/Patient", b'{"resourceType":"Patient"}', {"Content-Type": "application/json"}),
    ("no content type", "/fhir/Patient", b'{"resourceType":"Patient"}', {}),
    ("accept json", "/fhir/Patient", b'{"resourceType":"Patient"}', {**JSON, "Accept": "application/json"}),
    ("accept xml only", "/fhir/Patient", b'{"resourceType":"Patient"}', {**JSON, "Accept": "application/fhir+xml"}),
    ("minimal", "/fhir/Patient", b'{"resourceType":"Patient"}', {**JSON, "Prefer": "return=minimal"}),
    ("outcome", "/fhir/Patient", b'{"resourceType":"Patient","gender":"unknown-ish"}', {**JSON, "Prefer": "return=OperationOutcome"}),
    ("outcome ok", "/fhir/Patient", b'{"resourceType":"Patient"}', {**JSON, "Prefer": "return=OperationOutcome"}),
    ("wrong type", "/fhir/Patient", b'{"resourceType":"Observation","status":"final","code":{"text":"x"}}', JSON),
    ("unknown type", "/fhir/Foo", b'{"resourceType":"Foo"}', JSON),
    ("unknown element", "/fhir/Patient", b'{"resourceType":"Patient","colour":"blue"}', JSON),
    ("bad code", "/fhir/Patient", b'{"resourceType":"Patient","gender":"robot"}', JSON),
    ("bad date", "/fhir/Patient", b'{"resourceType":"Patient","birthDate":"1970-13-01"}', JSON),
    ("not json", "/fhir/Patient", b'{"resourceType":', JSON),
    ("empty", "/fhir/Patient", b"", JSON),
    ("array", "/fhir/Patient", b"[1, 2]", JSON),
    ("xml body", "/fhir/Patient", b"<Patient/>", {"Content-Type": "application/fhir+xml"}),
    ("latin-1", "/fhir/Patient", b'{"resourceType":"Patient"}', {"Content-Type": "application/fhir+json; charset=latin-1"}),
    ("duplicate key", "/fhir/Patient", b'{"resourceType":"Patient","active":true,"active":false}', JSON),
    ("nul", "/fhir/Patient", b'{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}', JSON),
    ("audit event", "/fhir/AuditEvent", b'{"resourceType":"AuditEvent"}', JSON),
]


@pytest.mark.parametrize("name,path,content,headers", CASES, ids=[c[0] for c in CASES])
def test_same_answer_as_the_router(client, monkeypatch, taken, name, path, content, headers):
    fast, routed, fast_taken = _both(client, monkeypatch, taken, path, content, headers)
    assert fast_taken == 1
    assert _normal(fast) == _normal(routed)


def test_generated_patients_give_the_same_answers(client, monkeypatch, taken):
    """Random Patients, valid and not (wrong types, unknown codes, bad dates, extra
    elements), answered the same both ways."""
    rnd = random.Random(19)
    values = {
        "active": [True, False, "yes", 1, None],
        "gender": ["male", "female", "other", "unknown", "robot", 3],
        "birthDate": ["1970", "1970-02", "1970-02-28", "1970-02-30", "70-1-1", ""],
        "name": [[{"family": "A", "given": ["B"]}], [{"family": ["A"]}], {"family": "A"}, [{}], []],
        "telecom": [[{"system": "phone", "value": "1"}], [{"system": "pager", "value": "1"}], [{"value": 1}]],
        "deceasedBoolean": [True, "no"],
        "deceasedDateTime": ["2020-01-01T10:00:00Z", "2020-01-01T10:00:00"],
        "extension": [[{"url": "http://x", "valueString": "s"}], [{"valueString": "s"}], [{"url": "http://x"}]],
        "_birthDate": [{"extension": [{"url": "http://x", "valueString": "s"}]}, {"id": 3}],
        "unknownThing": [1],
    }
    for i in range(40):
        doc = {"resourceType": "Patient"}
        for key in rnd.sample(sorted(values), rnd.randint(0, 4)):
            doc[key] = rnd.choice(values[key])
        fast, routed, fast_taken = _both(client, monkeypatch, taken, "/fhir/Patient", json.dumps(doc).encode(), JSON)
        assert fast_taken == 1
        assert _normal(fast) == _normal(routed), doc


def test_conditional_create_same_both_ways(client, monkeypatch, taken):
    client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:fast", "value": "one"}]})
    for _ in range(2):
        client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:fast", "value": "two"}]})
    fresh = f"none-yet-{random.random()}"
    for criteria in ("identifier=urn:fast|one", "identifier=urn:fast|two", f"identifier=urn:fast|{fresh}", "nonsense-param=1"):
        value = criteria.rpartition("|")[2]
        body = json.dumps({"resourceType": "Patient", "identifier": [{"system": "urn:fast", "value": value}]}).encode()
        fast, routed, fast_taken = _both(client, monkeypatch, taken, "/fhir/Patient", body, {**JSON, "If-None-Exist": criteria})
        assert fast_taken == 1
        if "none-yet" in criteria:  # the first created it, so the second found it
            assert fast.status_code == 201 and routed.status_code == 200
            continue
        assert _normal(fast) == _normal(routed)


def test_what_is_stored_and_audited_is_the_same(client, monkeypatch, taken):
    body = b'{"resourceType":"Patient","name":[{"family":"Stored"}],"extension":[{"url":"http://e","valueDecimal":1.50}]}'
    fast, routed, _ = _both(client, monkeypatch, taken, "/fhir/Patient", body, JSON)
    ids = [r.json()["id"] for r in (fast, routed)]
    stored = [client.get(f"/fhir/Patient/{i}") for i in ids]
    assert _normal(stored[0]) == _normal(stored[1]) and b"1.50" in stored[0].content
    events = []
    client.app.state.audit_writer.flush()  # the reads above are logged too: in the log now, and told apart
    for i in ids:
        bundle = client.get(f"/fhir/AuditEvent?entity=Patient/{i}/_history/1&action=C").json()
        assert bundle["total"] == 1
        event = bundle["entry"][0]["resource"]
        for volatile in ("id", "meta", "recorded"):
            event.pop(volatile)
        events.append(json.loads(ID.sub("ID", json.dumps(event))))
    assert events[0] == events[1]
    assert client.get(f"/fhir/Patient?_id={ids[0]},{ids[1]}&family=Stored").json()["total"] == 2  # indexed alike


def test_restricted_tokens_refused_alike(app, settings, monkeypatch, taken, issue_token):
    from fastapi.testclient import TestClient

    patient_token = issue_token(scope="patient/*.cruds", patient="somebody")
    read_only = issue_token(scope="system/*.rs")
    with TestClient(app, base_url="http://testserver") as c:
        for token in (patient_token, read_only, None):
            headers = {**JSON, **({"Authorization": f"Bearer {token}"} if token else {})}
            for content in (b'{"resourceType":"Patient"}',
                            b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/other"}}'):
                path = "/fhir/" + json.loads(content)["resourceType"]
                fast, routed, _ = _both(c, monkeypatch, taken, path, content, headers)
                assert fast.status_code in (401, 403)
                assert _normal(fast) == _normal(routed)


@pytest.mark.parametrize("path", ["/fhir/Patient?_format=json", "/fhir/Patient/_search", "/fhir/$export", "/fhir/Binary",
                                  "/fhir/Patient/x", "/fhir", "/fhir/patient"])
def test_other_posts_go_to_the_app(client, taken, path):
    client.post(path, content=b'{"resourceType":"Patient"}', headers=JSON)
    assert taken == []


def test_body_too_large_same_both_ways(client, settings, monkeypatch, taken):
    monkeypatch.setattr(settings, "max_body_bytes", 64)
    content = json.dumps({"resourceType": "Patient", "name": [{"family": "x" * 100}]}).encode()
    fast, routed, fast_taken = _both(client, monkeypatch, taken, "/fhir/Patient", content, JSON)
    assert fast_taken == 1 and fast.status_code == 413
    assert _normal(fast) == _normal(routed)


def test_database_failure_answered_alike(client, monkeypatch, taken):
    """A database failure during the write: the same 409/503 the app's handler gives."""
    import sqlalchemy.exc

    from fhir_server.rest import interactions as ix

    class Unique(Exception):
        sqlstate = "23505"

    def failing(*args, **kwargs):
        raise sqlalchemy.exc.IntegrityError("INSERT ...", {}, Unique("duplicate key"))

    monkeypatch.setattr(ix, "create", failing)
    fast, routed, fast_taken = _both(client, monkeypatch, taken, "/fhir/Patient", b'{"resourceType":"Patient"}', JSON)
    assert fast_taken == 1 and fast.status_code == 409
    assert _normal(fast) == _normal(routed)
