"""HTTP and JSON details a strict client or a proxy relies on: HEAD, the UTF-8 rule,
one value per JSON property, boolean search values. Nothing is written by a refused body."""

from __future__ import annotations

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _count(client, res_type: str) -> int:
    return client.get(f"/fhir/{res_type}", params={"_summary": "count"}).json()["total"]


@pytest.fixture
def patient_id(client):
    r = client.post("/fhir/Patient", content=b'{"resourceType":"Patient","active":true,"name":[{"family":"Headcheck"}]}',
                    headers=FHIR_JSON)
    assert r.status_code == 201
    return r.json()["id"]


# ---------------------------------------------------------------- HEAD (RFC 9110 9.3.2)


def test_head_gives_the_get_headers_without_a_body(live_server, auth_headers, patient_id):
    with httpx.Client(headers=auth_headers) as http:
        get = http.get(f"{live_server}/Patient/{patient_id}")
        head = http.head(f"{live_server}/Patient/{patient_id}")
        assert head.status_code == 200 and head.content == b""
        for name in ("etag", "last-modified", "content-type", "content-length"):
            assert head.headers[name] == get.headers[name], name
        assert http.head(f"{live_server}/Patient?name=Headcheck").status_code == 200
        missing = http.head(f"{live_server}/Patient/no-such-id")
        assert missing.status_code == 404 and missing.content == b""


def test_head_needs_the_same_token_as_get(live_server, patient_id):
    r = httpx.head(f"{live_server}/Patient/{patient_id}")
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]


# ---------------------------------------------------------------- UTF-8 only (R4 http.html)


@pytest.mark.parametrize("ctype", ["application/fhir+json; charset=ISO-8859-1", "application/fhir+json;charset=\"windows-1252\"",
                                   "application/json; charset=utf-16"])
def test_a_body_declared_in_another_charset_is_415_and_not_stored(client, ctype):
    before = _count(client, "Patient")
    r = client.post("/fhir/Patient", content=b'{"resourceType":"Patient","gender":"male"}', headers={"Content-Type": ctype})
    assert r.status_code == 415, r.text
    assert "UTF-8" in r.json()["issue"][0]["diagnostics"]
    assert _count(client, "Patient") == before


@pytest.mark.parametrize("ctype", ["application/fhir+json; charset=utf-8", "application/fhir+json; charset=UTF8",
                                   "application/fhir+json; fhirVersion=4.0"])
def test_utf8_or_no_charset_is_accepted(client, ctype):
    r = client.post("/fhir/Patient", content='{"resourceType":"Patient","name":[{"family":"Łódź"}]}'.encode(),
                    headers={"Content-Type": ctype})
    assert r.status_code == 201, r.text


def test_operation_body_in_another_charset_is_415(client):
    body = b'{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient"}}]}'
    r = client.post("/fhir/Patient/$validate", content=body, headers={"Content-Type": "application/fhir+json; charset=latin1"})
    assert r.status_code == 415


# ---------------------------------------------------------------- one value per property


@pytest.mark.parametrize("body, name", [
    (b'{"resourceType":"Patient","gender":"male","gender":"female"}', "gender"),
    (b'{"resourceType":"Patient","name":[{"family":"A","given":["x"],"given":["y"]}]}', "given"),
    (b'{"resourceType":"Patient","gender":"male","\\u0067ender":"female"}', "gender"),  # the same name, escaped
])
def test_a_repeated_property_is_400_and_not_stored(client, body, name):
    before = _count(client, "Patient")
    r = client.post("/fhir/Patient", content=body, headers=FHIR_JSON)
    assert r.status_code == 400, r.text
    assert f"'{name}' occurs twice" in r.json()["issue"][0]["diagnostics"]
    assert _count(client, "Patient") == before


def test_a_repeated_property_in_a_transaction_entry_refuses_the_bundle(client):
    before = _count(client, "Patient")
    bundle = (b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","active":true,'
              b'"active":false},"request":{"method":"POST","url":"Patient"}}]}')
    assert client.post("/fhir", content=bundle, headers=FHIR_JSON).status_code == 400
    assert _count(client, "Patient") == before


def test_colons_inside_strings_and_equal_names_in_sibling_objects_are_fine(client):
    body = b'{"resourceType":"Patient","name":[{"family":"a:b","given":["c"]},{"family":"d","given":["e:f"]}],"telecom":[{"value":"x"}]}'
    assert client.post("/fhir/Patient", content=body, headers=FHIR_JSON).status_code == 201


# ---------------------------------------------------------------- boolean search values


@pytest.mark.parametrize("query", ["active=maybe", "active=1", "active:not=yes", "active=true,perhaps"])
def test_a_boolean_parameter_takes_only_true_or_false(client, query):
    r = client.get(f"/fhir/Patient?{query}")
    assert r.status_code == 400, r.text
    assert "boolean" in r.json()["issue"][0]["diagnostics"]


def test_boolean_values_still_match(client, patient_id):
    ids = {e["resource"]["id"] for e in client.get("/fhir/Patient?active=true&name=Headcheck").json().get("entry", [])}
    assert patient_id in ids
    assert client.get("/fhir/Patient?active:not=false&name=Headcheck").status_code == 200
    assert client.get("/fhir/Patient?active:missing=false&name=Headcheck").status_code == 200
    assert client.get("/fhir/Patient?gender=no-such-code").status_code == 200  # a code: no match, not an error
