"""Per-case consent on every path (security/case_consent.py, search/case_access.py): staff
(a `user/` token of a Practitioner) see a case's DocumentReference by read, search,
`_revinclude`, `$everything`, history and `$export` only while the patient's case consent is in
force; revocation and expiry count from the very next request; the patient and backend
clients see everything of theirs; a document of no case is unaffected."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient

from fhir_server import clock

from .family import case_claim, consent, exported, new_id, patient, put

INSURER = "Organization/insurer-1"


def ids(bundle: dict, res_type: str = "DocumentReference") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry") or [] if e["resource"]["resourceType"] == res_type}


def case_provision(claim: str, **period) -> dict:
    p = {"type": "permit", "period": {"start": "2026-01-01", **period},
         "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                    "reference": {"reference": INSURER}}],
         "data": [{"meaning": "related", "reference": {"reference": f"Claim/{claim}"}}]}
    return p


@pytest.fixture
def case_file(client):
    """A Danish adult with two Claims (each with a DocumentReference) and a document of no case."""
    pid, _ = patient(client, "DK", date(1990, 6, 6))
    subject = {"reference": f"Patient/{pid}"}
    made = {"patient": pid}
    for case in ("a", "b"):
        claim = new_id(f"claim-{case}")
        case_claim(client, claim, subject)
        doc = new_id(f"doc-{case}")
        put(client, {"resourceType": "DocumentReference", "id": doc, "status": "current", "subject": subject,
                     "content": [{"attachment": {"contentType": "text/plain", "data": "aGVq"}}],
                     "context": {"related": [{"reference": f"Claim/{claim}"}]}})
        made[case] = {"claim": claim, "doc": doc}
    plain = new_id("doc-plain")
    put(client, {"resourceType": "DocumentReference", "id": plain, "status": "current", "subject": subject,
                 "content": [{"attachment": {"contentType": "text/plain", "data": "aGVq"}}]})
    made["plain"] = plain
    return made


@pytest.fixture
def staff(app, client, issue_token):
    """A caseworker of the insurer the case consents name (a PractitionerRole at INSURER)."""
    put(client, {"resourceType": "PractitionerRole", "id": "role-handler-7", "active": True,
                 "practitioner": {"reference": "Practitioner/handler-7"}, "organization": {"reference": INSURER}})
    token = issue_token(scope="user/*.rs", fhir_user="Practitioner/handler-7")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def _seen(c: TestClient, f: dict) -> dict:
    """What `c` sees of the patient's documents along each path."""
    pid, a, b = f["patient"], f["a"], f["b"]
    search = c.get("/fhir/DocumentReference", params={"patient": pid, "_total": "accurate"}).json()
    count = c.get("/fhir/DocumentReference", params={"patient": pid, "_summary": "count"}).json()
    paged = c.get("/fhir/DocumentReference", params={"patient": pid, "_count": 1, "_total": "accurate"}).json()
    rev = c.get("/fhir/Claim", params={"_id": f"{a['claim']},{b['claim']}", "_revinclude": "DocumentReference:related"}).json()
    history = c.get(f"/fhir/DocumentReference/{a['doc']}/_history")
    type_history = c.get("/fhir/DocumentReference/_history", params={"_count": 500}).json()
    return {
        "read_a": c.get(f"/fhir/DocumentReference/{a['doc']}").status_code,
        "read_b": c.get(f"/fhir/DocumentReference/{b['doc']}").status_code,
        "read_plain": c.get(f"/fhir/DocumentReference/{f['plain']}").status_code,
        "search": ids(search), "total": search.get("total"), "count": count.get("total"), "paged_total": paged.get("total"),
        "revinclude": ids(rev), "claims": ids(rev, "Claim"),
        "history_a": history.status_code,
        "type_history": ids(type_history) & {a["doc"], b["doc"], f["plain"]},
    }


def test_staff_see_case_documents_only_under_the_case_consent(client, staff, case_file):
    f = case_file
    a, plain = f["a"]["doc"], f["plain"]
    before = _seen(staff, f)
    assert (before["read_a"], before["read_b"], before["read_plain"]) == (404, 404, 200)
    assert before["search"] == {plain} and before["total"] == before["count"] == before["paged_total"] == 1
    assert before["revinclude"] == set() and len(before["claims"]) == 2  # the Claims themselves are not case documents
    assert before["history_a"] == 404 and before["type_history"] == {plain}

    cid = consent(client, f["patient"], case_provision(f["a"]["claim"]))
    during = _seen(staff, f)
    assert (during["read_a"], during["read_b"], during["read_plain"]) == (200, 404, 200)
    assert during["search"] == {a, plain} and during["total"] == during["count"] == during["paged_total"] == 2
    assert during["revinclude"] == {a}
    assert during["history_a"] == 200 and during["type_history"] == {a, plain}

    # withdrawn: gone from the very next request on, on every path
    consent(client, f["patient"], case_provision(f["a"]["claim"]), status="inactive", cid=cid)
    after = _seen(staff, f)
    assert after == before


def test_expiry_needs_no_write(client, staff, case_file):
    f = case_file
    end = clock.now() + timedelta(days=2)
    consent(client, f["patient"], case_provision(f["a"]["claim"], end=end.date().isoformat()))
    assert staff.get(f"/fhir/DocumentReference/{f['a']['doc']}").status_code == 200
    with clock.frozen(end + timedelta(days=1)):
        assert staff.get(f"/fhir/DocumentReference/{f['a']['doc']}").status_code == 404
        assert ids(staff.get("/fhir/DocumentReference", params={"patient": f["patient"]}).json()) == {f["plain"]}


def test_deny_of_the_case_wins(client, staff, case_file):
    f = case_file
    consent(client, f["patient"], case_provision(f["a"]["claim"]))
    assert staff.get(f"/fhir/DocumentReference/{f['a']['doc']}").status_code == 200
    deny = case_provision(f["a"]["claim"])
    deny["type"] = "deny"
    consent(client, f["patient"], deny)
    assert staff.get(f"/fhir/DocumentReference/{f['a']['doc']}").status_code == 404


def test_consent_of_another_patient_does_not_count(client, staff, case_file):
    f = case_file
    other, _ = patient(client, "DK", date(1985, 3, 3))
    consent(client, other, case_provision(f["a"]["claim"]))  # names the case, but is not this patient's
    assert staff.get(f"/fhir/DocumentReference/{f['a']['doc']}").status_code == 404


def test_patient_and_system_see_everything_of_theirs(app, client, issue_token, case_file):
    f = case_file
    every = {f["a"]["doc"], f["b"]["doc"], f["plain"]}
    token = issue_token(scope="patient/*.rs", patient=f["patient"], fhir_user=f"Patient/{f['patient']}")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as own:
        seen = _seen(own, f)
        assert (seen["read_a"], seen["read_b"]) == (200, 200)
        assert seen["search"] == every and seen["total"] == 3
        assert seen["revinclude"] == {f["a"]["doc"], f["b"]["doc"]}
        assert ids(own.get(f"/fhir/Patient/{f['patient']}/$everything").json()) == every
    seen = _seen(client, f)
    assert seen["search"] == every and seen["total"] == 3 and seen["revinclude"] == {f["a"]["doc"], f["b"]["doc"]}


def test_everything_for_staff_follows_the_case_consent(client, staff, case_file):
    f = case_file
    r = staff.get(f"/fhir/Patient/{f['patient']}/$everything")
    assert r.status_code == 200, r.text
    assert ids(r.json()) == {f["plain"]}
    consent(client, f["patient"], case_provision(f["b"]["claim"]))
    assert ids(staff.get(f"/fhir/Patient/{f['patient']}/$everything").json()) == {f["b"]["doc"], f["plain"]}


def _export_documents(app, c: TestClient) -> set[str]:
    return exported(c, app, {"_type": "DocumentReference"}).get("DocumentReference", set())


def test_export_by_staff_follows_the_case_consent(app, client, staff, case_file):
    f = case_file
    mine = {f["a"]["doc"], f["b"]["doc"], f["plain"]}
    assert _export_documents(app, staff) & mine == {f["plain"]}
    consent(client, f["patient"], case_provision(f["a"]["claim"]))
    assert _export_documents(app, staff) & mine == {f["a"]["doc"], f["plain"]}
    assert _export_documents(app, client) & mine == mine  # a backend client
