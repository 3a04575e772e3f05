"""Health and readiness, the access log, the base URL behind proxies, gzip,
`/metadata` subsets, and size limits."""

from __future__ import annotations

import logging

import orjson
import pytest
from starlette.requests import Request

FHIR_JSON = {"Content-Type": "application/fhir+json"}


# ---------------------------------------------------------------- /health and /ready


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_ready_is_503_on_a_database_without_the_schema(settings, tmp_path, auth_headers):
    from fastapi.testclient import TestClient

    from fhir_server.api.app import create_app
    from fhir_server.storage.database import Database

    db = Database(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    app = create_app(settings, db)
    with TestClient(app, headers=auth_headers) as c:
        assert c.get("/health").status_code == 200  # liveness does not depend on the database
        r = c.get("/ready")
    db.dispose()
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    issue = r.json()["issue"][0]
    assert issue["code"] == "transient" and "fhir-server migrate" in issue["diagnostics"]


# ---------------------------------------------------------------- access log


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines():
    from fhir_server.api.access_log import LOGGER_NAME

    handler = _Lines()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_access_log_line_leaves_query_values_out(client, access_lines):
    r = client.get("/fhir/Patient", params={"name": "Secretsson", "birthdate": "1912-12-12"}, headers={"X-Request-Id": "rid-123"})
    assert r.status_code == 200
    line = next(x for x in access_lines if "rid-123" in x)
    assert line.startswith("GET /fhir/Patient 200 ") and "ms id=rid-123" in line
    assert "Secretsson" not in line and "1912" not in line


def test_access_log_json_lines(settings, app, access_lines, auth_headers):
    from fastapi.testclient import TestClient

    from fhir_server.api.app import create_app

    json_app = create_app(settings.model_copy(update={"access_log": "json"}), app.state.db)
    with TestClient(json_app, headers=auth_headers) as c:
        c.get("/fhir/Patient/does-not-exist?_elements=name", headers={"X-Request-Id": "rid-json"})
    record = orjson.loads(next(x for x in access_lines if "rid-json" in x))
    assert record["method"] == "GET" and record["path"] == "/fhir/Patient/does-not-exist"
    assert record["status"] == 404 and record["request_id"] == "rid-json" and record["duration_ms"] >= 0
    assert "_elements" not in record["path"]


def test_a_path_cannot_forge_access_log_lines(client, access_lines):
    """CR, LF and tab decoded from the path (%0D, %0A, %09) are written escaped: one request,
    one line (CWE-117)."""
    r = client.get("/fhir/Patient/a%0AGET%20/fhir/forged%20200%0Db%09c", headers={"X-Request-Id": "rid-forge"})
    assert r.status_code in (400, 404)
    lines = [x for x in access_lines if "rid-forge" in x or "forged" in x]
    assert len(lines) == 1 and "\n" not in lines[0] and "\r" not in lines[0] and "\t" not in lines[0], lines
    assert lines[0].startswith("GET /fhir/Patient/a\\nGET /fhir/forged 200\\rb\\tc "), lines
    assert client.get("/fhir/Patient/\u0141\u00f3d\u017a", headers={"X-Request-Id": "rid-utf"}).status_code in (400, 404)
    assert any(x.startswith("GET /fhir/Patient/\u0141\u00f3d\u017a ") for x in access_lines if "rid-utf" in x)  # printable: as it is


@pytest.mark.parametrize("given, kept", [
    ("rid-123_ABC.x:y", True),
    ("a" * 200, True),
    ("a" * 201, False),
    ("tab\there", False),
    ("\u0141\u00f3d\u017a", False),
    ("with space", False),
])
def test_a_client_request_id_is_kept_only_when_it_is_one(client, given, kept):
    """X-Request-Id as the client sent it when it is 1-200 visible ASCII characters; otherwise
    (60 KB, control characters, bytes beyond ASCII) the request gets an id of its own, so no
    such value is echoed, logged or stored in the access log (where it could not be found)."""
    r = client.get("/fhir/metadata", headers=[("X-Request-Id", given.encode("utf-8"))])
    assert r.status_code == 200
    assert (r.headers["x-request-id"] == given) is kept
    if not kept:
        assert len(r.headers["x-request-id"]) == 32 and r.headers["x-request-id"].isalnum()


# ---------------------------------------------------------------- base URL behind proxies

EVIL = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/phish"}


def test_forwarded_headers_from_an_untrusted_client_are_ignored(client):
    r = client.post("/fhir/Patient", content=b'{"resourceType":"Patient"}', headers={**FHIR_JSON, **EVIL})
    assert r.status_code == 201
    assert r.headers["Location"].startswith("http://testserver/fhir/Patient/")


def _request(peer: str, headers: dict[str, str]) -> Request:
    return Request({
        "type": "http", "method": "GET", "path": "/fhir/Patient", "query_string": b"", "scheme": "http",
        "server": ("10.0.0.5", 8080), "client": (peer, 40000),
        "headers": [(b"host", b"fhir.internal:8080")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    })


def test_forwarding_policy_trusts_only_configured_proxies():
    from fhir_server.api.forwarding import ForwardingPolicy

    default = ForwardingPolicy()
    assert default.base_url(_request("127.0.0.1", EVIL), "/fhir") == "https://evil.example/phish/fhir"  # loopback proxy
    assert default.base_url(_request("203.0.113.9", EVIL), "/fhir") == "http://fhir.internal:8080/fhir"
    lan = ForwardingPolicy(trusted_proxies="10.0.0.0/8, ::1")
    assert lan.base_url(_request("10.1.2.3", EVIL), "/fhir") == "https://evil.example/phish/fhir"
    assert lan.base_url(_request("127.0.0.1", EVIL), "/fhir") == "http://fhir.internal:8080/fhir"
    assert lan.base_url(_request("10.1.2.3", {"X-Forwarded-Proto": "javascript"}), "/fhir") == "http://fhir.internal:8080/fhir"
    public = ForwardingPolicy(public_base_url="https://fhir.example.org/r4/", trusted_proxies="0.0.0.0/0")
    assert public.base_url(_request("10.1.2.3", EVIL), "/fhir") == "https://fhir.example.org/r4"


def test_configured_public_base_url_wins(settings, app, auth_headers):
    from fastapi.testclient import TestClient

    from fhir_server.api.app import create_app

    public = create_app(settings.model_copy(update={"public_base_url": "https://fhir.example.org/fhir"}), app.state.db)
    with TestClient(public, headers=auth_headers) as c:
        r = c.post("/fhir/Patient", content=b'{"resourceType":"Patient"}', headers={**FHIR_JSON, **EVIL})
    assert r.headers["Location"].startswith("https://fhir.example.org/fhir/Patient/")


# ---------------------------------------------------------------- /metadata and gzip


def test_metadata_summary_and_elements_and_gzip(client):
    full = client.get("/fhir/metadata", headers={"Accept-Encoding": "gzip"})
    assert full.status_code == 200 and full.headers["content-encoding"] == "gzip"
    assert int(full.headers["content-length"]) < len(full.content) / 5  # what went over the wire
    summary = client.get("/fhir/metadata", params={"_summary": "true"})
    assert summary.status_code == 200 and len(summary.content) < len(full.content) / 2
    assert summary.json()["fhirVersion"] == "4.0.1"
    elements = client.get("/fhir/metadata", params={"_elements": "fhirVersion,format"}).json()
    assert set(elements) >= {"resourceType", "fhirVersion", "format"} and "rest" not in elements
    assert any(t["code"] == "SUBSETTED" for t in elements["meta"]["tag"])
    assert client.get("/fhir/metadata", params={"_summary": "bogus"}).status_code == 400


def test_small_responses_are_not_compressed(client):
    r = client.get("/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers


# ---------------------------------------------------------------- size limits


@pytest.fixture
def small_limits(monkeypatch):
    from fhir_server.rest import limits

    monkeypatch.setattr(limits, "MAX_RESOURCE_BYTES", 64 * 1024)
    monkeypatch.setattr(limits, "MAX_RESPONSE_BYTES", 200 * 1024)
    return limits


def _patient(family_bytes: int) -> bytes:
    return orjson.dumps({"resourceType": "Patient", "name": [{"family": "x" * family_bytes}]})


def test_an_over_large_resource_is_413_and_not_written(client, small_limits):
    before = client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"]
    r = client.post("/fhir/Patient", content=_patient(100 * 1024), headers=FHIR_JSON)
    assert r.status_code == 413 and r.json()["issue"][0]["code"] == "too-costly"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": orjson.loads(_patient(10)), "request": {"method": "POST", "url": "Patient"}},
        {"resource": orjson.loads(_patient(100 * 1024)), "request": {"method": "POST", "url": "Patient"}},
    ]}
    assert client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON).status_code == 413
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == before


def test_a_small_batch_cannot_build_a_huge_response(client, small_limits):
    pid = client.post("/fhir/Patient", content=_patient(50 * 1024), headers=FHIR_JSON).json()["id"]
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": f"Patient/{pid}"}} for _ in range(40)]}
    r = client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)
    assert r.status_code == 200 and len(r.content) < 300 * 1024
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[:3] == ["200 OK"] * 3 and set(statuses[4:]) == {"413"}
    txn = {**bundle, "type": "transaction"}
    assert client.post("/fhir", content=orjson.dumps(txn), headers=FHIR_JSON).status_code == 413


def test_a_search_page_over_the_response_limit_is_413(client, small_limits):
    family = "Bigpage" + "y" * 20
    for _ in range(5):
        client.post("/fhir/Patient", content=orjson.dumps({"resourceType": "Patient", "name": [{"family": family, "given": ["z" * 60000]}]}), headers=FHIR_JSON)
    r = client.get("/fhir/Patient", params={"family": family, "_count": "5"})
    assert r.status_code == 413 and "_count" in r.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient", params={"family": family, "_count": "2"}).status_code == 200


# ---------------------------------------------------------------- /docs and OpenAPI


def test_docs_work_offline_and_operation_ids_are_unique(client):
    import re
    import warnings

    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href|url)\s*[:=]\s*[\'"]([^\'"]+)[\'"]', page.text)
    assert urls and all(u.startswith("/") for u in urls), urls  # nothing from another host
    for u in urls:
        assert client.get(u).status_code == 200, u
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns about duplicate operation ids
        client.app.openapi_schema = None
        spec = client.app.openapi()
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert {"read", "vread", "update", "patch", "delete", "create", "search-type", "capabilities", "batch-transaction"} <= set(ids)


def test_fastapi_telemetry_is_opt_in(settings, monkeypatch):
    """Spans of FHIR requests carry patient ids in their paths: FastAPI's own telemetry reaches a
    configured OpenTelemetry provider only with FHIR_SERVER_TELEMETRY=true."""
    from opentelemetry import trace

    from fhir_server.api.app import create_app

    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())  # a provider is configured
    default = create_app(settings)
    opted_in = create_app(settings.model_copy(update={"telemetry": True}))
    assert not default._native_telemetry.enabled()
    assert opted_in._native_telemetry.enabled()
