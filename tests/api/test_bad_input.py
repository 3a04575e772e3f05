"""Input JSON or a URL may carry but FHIR cannot hold: a 400 (or 404) naming the
element, the same on SQLite and PostgreSQL, and nothing written."""

from __future__ import annotations

import threading
import uuid

import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _count(client, res_type: str) -> int:
    return client.get(f"/fhir/{res_type}", params={"_summary": "count"}).json()["total"]


def _assert_rejected(r, status=400, expression: str | None = None):
    assert r.status_code == status, (r.status_code, r.text)
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    if expression:
        assert expression in oo["issue"][0].get("expression", []), oo
    return oo["issue"][0]


@pytest.fixture
def patient_id(client):
    r = client.post("/fhir/Patient", content=b'{"resourceType":"Patient","name":[{"family":"Bad-input"}]}', headers=FHIR_JSON)
    assert r.status_code == 201
    return r.json()["id"]


# ---------------------------------------------------------------- NUL and control characters


@pytest.mark.parametrize("url", [
    "/fhir/Patient?name=a%00b",
    "/fhir/Patient?na%00me=x",
    "/fhir/Patient/abc%00",
    "/fhir/Patient/abc%00/_history",
    "/fhir/Patient/abc/_history/1%00",
    "/fhir/$export-poll-status?_jobId=a%00b",
    "/fhir/Patient?name=%07bell",
    "/fhir/Patient?name=%ED%A0%80",  # a UTF-16 surrogate, percent-encoded as (invalid) UTF-8
    "/fhir/Patient?name=%FF",
])
def test_control_characters_in_the_url_are_400(client, url):
    issue = _assert_rejected(client.get(url))
    assert issue["code"] == "value"


@pytest.mark.parametrize("family", ["a\\u0000b", "\\u001b[31m", "bell\\u0007", "\\b", "\\f"])
def test_control_characters_in_a_body_are_400_naming_the_element(client, family):
    before = _count(client, "Patient")
    body = f'{{"resourceType":"Patient","name":[{{"family":"{family}"}}]}}'.encode()
    issue = _assert_rejected(client.post("/fhir/Patient", content=body, headers=FHIR_JSON), expression="Patient.name[0].family")
    assert "control character" in issue["diagnostics"]
    assert _count(client, "Patient") == before


def test_tab_cr_lf_are_allowed(client):
    body = b'{"resourceType":"Patient","name":[{"text":"a\\tb\\r\\nc"}]}'
    assert client.post("/fhir/Patient", content=body, headers=FHIR_JSON).status_code == 201


def test_nul_in_a_transaction_entry_and_a_patch(client, patient_id):
    bundle = b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","gender":"fe\\u0000male"},"request":{"method":"POST","url":"Patient"}}]}'
    _assert_rejected(client.post("/fhir", content=bundle, headers=FHIR_JSON))
    patch = b'[{"op":"add","path":"/gender","value":"ma\\u0000le"}]'
    _assert_rejected(client.patch(f"/fhir/Patient/{patient_id}", content=patch, headers={"Content-Type": "application/json-patch+json"}))
    assert client.get(f"/fhir/Patient/{patient_id}").json()["meta"]["versionId"] == "1"


def test_nul_in_an_hl7_message_is_refused_with_an_ack(client):
    msg = "MSH|^~\\&|EHR|CLINIC|FHIR|SERVER|20240501120000||ADT^A01^ADT_A01|NUL1|P|2.5\rPID|1||123||Nu\x00ll^Anna\r"
    r = client.post("/hl7v2", content=msg.encode())
    assert r.status_code == 200
    assert "MSA|AR" in r.text and "control character" in r.text


# ---------------------------------------------------------------- numbers and strings


@pytest.mark.parametrize("body,expression", [
    (b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueInteger":99999999999999999999999}', "Observation.valueInteger"),
    (b'{"resourceType":"Patient","multipleBirthInteger":-99999999999999999999}', "Patient.multipleBirthInteger"),
    (b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueDecimal":1e999}', "Observation.valueDecimal"),
    (b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":-1E+400}}', "Observation.valueQuantity.value"),
    (b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}', "Patient.name[0].family"),
    (b'{"resourceType":"Patient","name":[{"given":["ok","\\udc00x"]}]}', "Patient.name[0].given[1]"),
])
def test_numbers_and_strings_fhir_cannot_hold_are_400(client, body, expression):
    res_type = body.split(b'"')[3].decode()
    before = _count(client, res_type)
    _assert_rejected(client.post(f"/fhir/{res_type}", content=body, headers=FHIR_JSON), expression=expression)
    assert _count(client, res_type) == before


def test_32_bit_integers_are_checked_per_element(client):
    body = b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueInteger":2147483648}'
    assert client.post("/fhir/Observation", content=body, headers=FHIR_JSON).status_code in (400, 422)
    body = b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueInteger":2147483647}'
    assert client.post("/fhir/Observation", content=body, headers=FHIR_JSON).status_code == 201


def test_surrogate_pairs_are_fine(client):
    body = b'{"resourceType":"Patient","name":[{"family":"\\ud83d\\ude00"}]}'
    r = client.post("/fhir/Patient", content=body, headers=FHIR_JSON)
    assert r.status_code == 201 and r.json()["name"][0]["family"] == "\U0001F600"


# ---------------------------------------------------------------- nesting


def _nested_extension(depth: int) -> bytes:
    inner = '{"url":"http://x","valueString":"deep"}'
    for _ in range(depth):
        inner = '{"url":"http://x","extension":[' + inner + "]}"
    return ('{"resourceType":"Patient","extension":[' + inner + "]}").encode()


@pytest.mark.parametrize("depth", [60, 130, 200, 600, 2000])
def test_deep_nesting_is_one_clean_400(client, depth):
    r = client.post("/fhir/Patient", content=_nested_extension(depth), headers=FHIR_JSON)
    issue = _assert_rejected(r)
    assert issue["code"] == "structure" and "nested deeper than" in issue["diagnostics"]


def test_deep_arrays_contained_transactions_and_patches_are_400(client, patient_id):
    arrays = b'{"resourceType":"Patient","name":[{"given":' + b"[" * 300 + b"]" * 300 + b"}]}"
    _assert_rejected(client.post("/fhir/Patient", content=arrays, headers=FHIR_JSON))
    contained = b'{"resourceType":"Patient","contained":[' + _nested_extension(300) + b"]}"
    _assert_rejected(client.post("/fhir/Patient", content=contained, headers=FHIR_JSON))
    bundle = b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":' + _nested_extension(300) + b',"request":{"method":"POST","url":"Patient"}}]}'
    _assert_rejected(client.post("/fhir", content=bundle, headers=FHIR_JSON))
    deep_value = b"{" + b'"a":{' * 300 + b"}" * 300 + b"}"
    json_patch = b'[{"op":"add","path":"/extension","value":' + deep_value + b"}]"
    _assert_rejected(client.patch(f"/fhir/Patient/{patient_id}", content=json_patch, headers={"Content-Type": "application/json-patch+json"}))
    merge = b'{"extension":' + deep_value + b"}"
    _assert_rejected(client.patch(f"/fhir/Patient/{patient_id}", content=merge, headers={"Content-Type": "application/merge-patch+json"}))


def test_realistic_nesting_is_accepted(client):
    assert client.post("/fhir/Patient", content=_nested_extension(20), headers=FHIR_JSON).status_code == 201


# ---------------------------------------------------------------- version ids


@pytest.mark.parametrize("vid", ["%C2%B9", "99999999999999999999", "%D9%A1", "0", "-1", "1.0", "+1", "%EF%BC%91"])
def test_version_ids_are_ascii_digits_of_bounded_size(client, patient_id, vid):
    r = client.get(f"/fhir/Patient/{patient_id}/_history/{vid}")
    _assert_rejected(r, status=404)


def test_version_one_still_reads(client, patient_id):
    assert client.get(f"/fhir/Patient/{patient_id}/_history/1").status_code == 200


@pytest.mark.parametrize("value", ["%D9%A1%D9%A0", "1_0", "%C2%B9", "99999999999999999999"])
def test_counts_are_ascii_digits(client, value):
    _assert_rejected(client.get(f"/fhir/Patient?_count={value}"))
    _assert_rejected(client.get(f"/fhir/Patient/_history?_count={value}"))


def test_etag_with_other_digits_is_400(client, patient_id):
    body = f'{{"resourceType":"Patient","id":"{patient_id}"}}'.encode()
    r = client.put(f"/fhir/Patient/{patient_id}", content=body, headers={**FHIR_JSON, "If-Match": 'W/"\u0661"'.encode()})
    assert r.status_code in (400, 412)


def test_an_id_with_a_trailing_newline_is_not_an_id(client):
    r = client.put("/fhir/Patient/abc%0A", content=b'{"resourceType":"Patient","id":"abc\\n"}', headers=FHIR_JSON)
    assert r.status_code == 400


# ---------------------------------------------------------------- OR values


@pytest.mark.parametrize("n", [101, 1000, 5000])
def test_too_many_or_values_is_400_on_every_database(client, n):
    issue = _assert_rejected(client.get("/fhir/Patient", params={"name": ",".join(["a"] * n)}))
    assert "at most 100" in issue["diagnostics"]


def test_one_hundred_or_values_are_answered(client):
    r = client.get("/fhir/Patient", params={"name": ",".join(f"n{i}" for i in range(100)), "birthdate": ",".join(["2000"] * 100)})
    assert r.status_code == 200


def test_long_id_lists_are_bounded(client):
    assert client.get("/fhir/Patient", params={"_id": ",".join(f"i{i}" for i in range(1000))}).status_code == 200
    _assert_rejected(client.get("/fhir/Patient", params={"_id": ",".join(f"i{i}" for i in range(1001))}))


# ---------------------------------------------------------------- database text


def test_concurrent_puts_creating_one_id_never_quote_the_database(client):
    rid = "race-" + uuid.uuid4().hex[:12]
    body = f'{{"resourceType":"Patient","id":"{rid}"}}'.encode()
    barrier = threading.Barrier(12)
    answers: list = []

    def put():
        barrier.wait()
        answers.append(client.put(f"/fhir/Patient/{rid}", content=body, headers=FHIR_JSON))

    threads = [threading.Thread(target=put) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 12
    assert {r.status_code for r in answers} <= {200, 201, 409}
    for r in answers:
        assert "duplicate key" not in r.text and "uq_" not in r.text and "UNIQUE" not in r.text
    assert sum(r.status_code == 201 for r in answers) == 1
