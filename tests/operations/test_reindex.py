"""Custom SearchParameters become searchable after a $reindex job, not before."""

from __future__ import annotations

import uuid


def _run_jobs(app):
    from fhir_server.jobs.runner import run_pending

    run_pending(app.state.db, app.state.settings)


def test_custom_search_parameter_lifecycle(client, app):
    code = f"eyecolour{uuid.uuid4().hex[:6]}"
    url = f"http://example.org/fhir/SearchParameter/{code}"
    ext = f"http://example.org/fhir/StructureDefinition/{code}"
    colour = f"green{uuid.uuid4().hex[:6]}"
    existing = client.post("/fhir/Patient", json={"resourceType": "Patient", "extension": [{"url": ext, "valueString": colour}]}).json()["id"]
    sp = {
        "resourceType": "SearchParameter", "url": url, "name": code, "status": "active", "description": "Eye colour",
        "code": code, "base": ["Patient"], "type": "string", "expression": f"Patient.extension('{ext}').value",
    }
    assert client.post("/fhir/SearchParameter", json=sp).status_code == 201

    # stored, but not yet searchable nor advertised
    assert client.get(f"/fhir/Patient?{code}={colour}").status_code == 400
    listed = {p["name"] for r in client.get("/fhir/metadata").json()["rest"][0]["resource"] if r["type"] == "Patient" for p in r["searchParam"]}
    assert code not in listed

    kick = client.post("/fhir/$reindex")
    assert kick.status_code == 202
    status_url = kick.headers["Content-Location"].replace("http://testserver", "")
    # written while the job is pending: indexed too
    during = client.post("/fhir/Patient", json={"resourceType": "Patient", "extension": [{"url": ext, "valueString": colour}]}).json()["id"]
    assert client.get(f"/fhir/Patient?{code}={colour}").status_code == 400
    _run_jobs(app)
    st = client.get(status_url)
    assert st.status_code == 200
    state = {p["name"]: p.get("valueCode") or p.get("valueString") for p in st.json()["parameter"]}
    assert state["state"] == "done"

    found = client.get(f"/fhir/Patient?{code}={colour}").json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted([existing, during])
    listed = {p["name"] for r in client.get("/fhir/metadata").json()["rest"][0]["resource"] if r["type"] == "Patient" for p in r["searchParam"]}
    assert code in listed

    # and later writes are indexed as usual
    later = client.post("/fhir/Patient", json={"resourceType": "Patient", "extension": [{"url": ext, "valueString": colour}]}).json()["id"]
    found = client.get(f"/fhir/Patient?{code}={colour}").json()
    assert later in [e["resource"]["id"] for e in found["entry"]]


def test_reindex_status_unknown_job_is_404(client):
    assert client.get("/fhir/$reindex-status?_jobId=nope").status_code == 404


def test_reindex_requires_post(client):
    assert client.get("/fhir/$reindex").status_code == 405
