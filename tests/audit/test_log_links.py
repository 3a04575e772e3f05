"""The ways to AuditEvents other than their own searches, answered from the access log
(audit.log_links): `_revinclude=AuditEvent:...` on other types' searches, `$everything`
with `_type=AuditEvent`, bulk `$export` of AuditEvent, and the CapabilityStatement."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text

from fhir_server.audit.balp import AuditFacts

from .conftest import log_insert


def _facts(tag: str, *, data=(), patients=(), fhir_user=None, acting_for=None, action="R", subtype="read",
           recorded=None) -> AuditFacts:
    return AuditFacts("rest", subtype, action, 200, recorded or datetime.now(timezone.utc), subject=f"s-{tag}",
                      client_id=f"c-{tag}", fhir_user=fhir_user, request_id=f"r-{uuid.uuid4().hex}", data=list(data),
                      patients=list(patients), acting_for=acting_for)


def _entries(bundle: dict, mode: str) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def _events_by_tag(client, tag: str) -> list[str]:
    bundle = client.get("/fhir/AuditEvent", params={"altid": f"s-{tag}", "_count": 1000}).json()
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


@pytest.fixture
def people(client):
    """A patient, a practitioner, an observation of the patient, and events about them:
    [0] entity the patient, [1] agent the practitioner acting for the patient, [2] entity the
    observation only, [3] another patient."""
    tag = uuid.uuid4().hex[:8]
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": tag}]}).json()["id"]
    other = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    prid = client.post("/fhir/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    oid = client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                                  "subject": {"reference": f"Patient/{pid}"}}).json()["id"]
    base = datetime.now(timezone.utc) - timedelta(minutes=5)
    events = [
        _facts(tag, data=[("Patient", pid)], patients=[pid], recorded=base),
        _facts(tag, fhir_user=f"Practitioner/{prid}", acting_for=f"Patient/{pid}", recorded=base + timedelta(seconds=1)),
        _facts(tag, data=[("Observation", oid)], recorded=base + timedelta(seconds=2)),
        _facts(tag, data=[("Patient", other)], patients=[other], recorded=base + timedelta(seconds=3)),
    ]
    log_insert(client.app.state.db, events)
    ids = _events_by_tag(client, tag)
    assert len(ids) == 4
    return {"tag": tag, "patient": pid, "other": other, "practitioner": prid, "observation": oid, "events": ids}


# ------------------------------------------------------------------ _revinclude


def test_revinclude_entity_agent_and_patient_come_from_the_log(client, people):
    pid, ev = people["patient"], people["events"]

    def included(res_type, rid, rev):
        r = client.get(f"/fhir/{res_type}", params={"_id": rid, "_revinclude": rev})
        assert r.status_code == 200, r.text
        assert [m["id"] for m in _entries(r.json(), "match")] == [rid]
        return {e["id"] for e in _entries(r.json(), "include") if e["resourceType"] == "AuditEvent"}

    assert {ev[0]} <= included("Patient", pid, "AuditEvent:entity")
    assert ev[1] not in included("Patient", pid, "AuditEvent:entity")  # named as an agent only
    assert {ev[1]} <= included("Patient", pid, "AuditEvent:agent")
    assert ev[0] not in included("Patient", pid, "AuditEvent:agent")
    both = included("Patient", pid, "AuditEvent:patient")
    assert {ev[0], ev[1]} <= both and ev[2] not in both and ev[3] not in both
    assert included("Practitioner", people["practitioner"], "AuditEvent:agent") == {ev[1]}
    assert included("Practitioner", people["practitioner"], "AuditEvent:patient") == set()  # not a Patient
    assert {ev[2]} <= included("Observation", people["observation"], "AuditEvent:entity")  # and its create
    assert included("Observation", people["observation"], "AuditEvent:entity:Patient") == set()
    assert {ev[0], ev[1]} <= included("Patient", pid, "AuditEvent:*")
    # the events as a read of them answers
    bundle = client.get("/fhir/Observation", params={"_id": people["observation"], "_revinclude": "AuditEvent:entity"}).json()
    event = next(e for e in bundle["entry"] if e["resource"]["id"] == ev[2])
    assert event["resource"] == client.get(f"/fhir/AuditEvent/{ev[2]}").json()
    assert event["fullUrl"].endswith(f"/AuditEvent/{ev[2]}")


def test_revinclude_of_many_events_pages_through_the_log_and_stops_at_the_size_limit(client, monkeypatch):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    log_insert(client.app.state.db, [_facts("many", data=[("Patient", pid)], patients=[pid]) for _ in range(1203)])
    r = client.get("/fhir/Patient", params={"_id": pid, "_revinclude": "AuditEvent:patient"})
    assert r.status_code == 200, r.text
    ids = [e["id"] for e in _entries(r.json(), "include")]
    assert len(ids) == len(set(ids)) and len(ids) >= 1204  # and the patient's create
    monkeypatch.setattr("fhir_server.rest.limits.MAX_RESPONSE_BYTES", 200_000)
    r = client.get("/fhir/Patient", params={"_id": pid, "_revinclude": "AuditEvent:patient"})
    assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"


def test_revinclude_with_iterate_follows_the_events_references(client, people):
    r = client.get("/fhir/Observation", params=[("_id", people["observation"]), ("_revinclude", "AuditEvent:entity"),
                                                 ("_revinclude:iterate", "AuditEvent:agent"),
                                                 ("_include:iterate", "AuditEvent:agent")])
    assert r.status_code == 200, r.text
    got = {(e["resourceType"], e["id"]) for e in _entries(r.json(), "include")}
    assert ("AuditEvent", people["events"][2]) in got
    # the event of the observation names no practitioner: nothing else follows from it
    assert ("Practitioner", people["practitioner"]) not in got
    r = client.get("/fhir/Patient", params=[("_id", people["patient"]), ("_revinclude", "AuditEvent:agent"),
                                             ("_include:iterate", "AuditEvent:agent:Practitioner")])
    got = {(e["resourceType"], e["id"]) for e in _entries(r.json(), "include")}
    assert {("AuditEvent", people["events"][1]), ("Practitioner", people["practitioner"])} <= got


def test_revinclude_shows_a_patient_only_the_events_they_may_see(app, issue_token, people):
    token = issue_token("patient/*.rs", patient=people["patient"])
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get("/fhir/Observation", params={"_id": people["observation"], "_revinclude": "AuditEvent:entity"})
        assert r.status_code == 200, r.text
        assert [m["id"] for m in _entries(r.json(), "match")] == [people["observation"]]
        # the event names the observation, but not the patient: outside the patient's view of the log
        got = _entries(r.json(), "include")
        assert people["events"][2] not in {e["id"] for e in got}
        assert all(f"Patient/{people['patient']}" in json.dumps(e) for e in got)  # the observation's create
        r = c.get("/fhir/Patient", params={"_id": people["patient"], "_revinclude": "AuditEvent:patient"})
        got = {e["id"] for e in _entries(r.json(), "include")}
        assert {people["events"][0], people["events"][1]} <= got and people["events"][3] not in got
    token = issue_token("user/Patient.rs user/Observation.rs", fhir_user=f"Practitioner/{people['practitioner']}")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get("/fhir/Patient", params={"_id": people["patient"], "_revinclude": "AuditEvent:patient"})
        assert r.status_code == 200 and _entries(r.json(), "include") == []  # no scope on AuditEvent


def test_revinclude_parameters_the_log_does_not_keep_are_refused(client, people):
    r = client.get("/fhir/Patient", params={"_id": people["patient"], "_revinclude": "AuditEvent:source"})
    assert r.status_code == 400 and "OperationOutcome" in r.text
    r = client.get("/fhir/Patient", params={"_id": people["patient"], "_revinclude": "AuditEvent:source"},
                   headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200
    r = client.get("/fhir/Patient", params={"_id": people["patient"], "_revinclude": "AuditEvent:nope"})
    assert r.status_code == 400


def test_log_keys_never_reach_the_reference_index(tmp_path):
    """An included event's key is the log's: `_include:iterate=*` must not take it for the
    resource with the same pk and include what that resource references."""
    from fhir_server.storage.schema import audit_log, audit_log_refs, resources
    from tests.operations.test_export import Server

    s = Server(tmp_path)
    try:
        practitioner = s.create({"resourceType": "Practitioner", "name": [{"family": "Unrelated"}]})
        pid = s.patient()
        obs = s.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                        "subject": {"reference": f"Patient/{pid}"}, "performer": [{"reference": f"Practitioner/{practitioner}"}]})
        s.app.state.audit_writer.flush()
        with s.db.write() as conn:
            k = conn.execute(select(resources.c.pk).where(resources.c.res_id == obs)).scalar_one()
            conn.execute(delete(audit_log_refs))
            conn.execute(delete(audit_log))
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT setval(pg_get_serial_sequence('audit_log', 'pk'), :k)"), {"k": k - 1})
        s.db.engine.dispose()  # PostgreSQL: connections hold blocks of log keys (audit.log._new_keys); new ones start at k
        log_insert(s.db, [_facts("filler")] * (0 if s.db.engine.dialect.name == "postgresql" else k - 1))
        log_insert(s.db, [_facts("target", data=[("Patient", pid)], patients=[pid])])
        with s.db.read() as conn:
            assert conn.execute(select(audit_log.c.pk).order_by(audit_log.c.pk.desc())).first()[0] == k
        r = s.client.get("/fhir/Patient", params=[("_id", pid), ("_revinclude", "AuditEvent:entity"), ("_include:iterate", "*")])
        assert r.status_code == 200, r.text
        got = {(e["resourceType"], e["id"]) for e in _entries(r.json(), "include")}
        assert any(t == "AuditEvent" for t, _ in got)
        assert ("Practitioner", practitioner) not in got
    finally:
        s.close()


# ------------------------------------------------------------------ $everything


def _everything(c, pid: str, **params) -> tuple[list[dict], list[dict]]:
    """Every page of $everything: (the bundles, the match entries' resources)."""
    bundles, found = [], []
    r = c.get(f"/fhir/Patient/{pid}/$everything", params=params)
    while True:
        assert r.status_code == 200, r.text
        bundles.append(r.json())
        found += _entries(r.json(), "match")
        nxt = [link["url"] for link in r.json()["link"] if link["relation"] == "next"]
        if not nxt:
            return bundles, found
        r = c.get(nxt[0])


def test_everything_with_type_auditevent_pages_through_the_log(client, people):
    pid, ev = people["patient"], people["events"]
    more = [_facts(people["tag"], data=[("Patient", pid)], patients=[pid]) for _ in range(5)]
    log_insert(client.app.state.db, more)
    for count in (2, 3, 50):
        client.app.state.audit_writer.flush()  # the earlier requests' own read events are in the log
        started = datetime.now(timezone.utc)
        bundles, found = _everything(client, pid, _type="AuditEvent,Observation,Patient", _count=count)
        keys = [(e["resourceType"], e["id"]) for e in found]
        assert len(keys) == len(set(keys))  # nothing twice across the pages
        assert all(len(_entries(b, "match")) <= count for b in bundles)
        events = [e for e in found if e["resourceType"] == "AuditEvent"]
        assert {ev[0], ev[1]} <= {e["id"] for e in events} and ev[2] not in {e["id"] for e in events}
        assert ev[3] not in {e["id"] for e in events}
        assert all(f"Patient/{pid}" in json.dumps(e) for e in events)
        assert ("Observation", people["observation"]) in keys and ("Patient", pid) in keys
        assert len([e for e in events if f"s-{people['tag']}" in json.dumps(e)]) == 7
        # the log grows while paging (each page's read is logged about this patient), so the first
        # page's total counts what was there when paging began
        before = [e for e in found if e["resourceType"] != "AuditEvent"
                  or datetime.fromisoformat(e["recorded"].replace("Z", "+00:00")) < started]
        assert bundles[0]["total"] >= len(before)
    # without _type, the log is not part of the record
    _, found = _everything(client, pid)
    assert all(e["resourceType"] != "AuditEvent" for e in found)
    # _since is on lastUpdated; _count=0 gives the total only
    _, found = _everything(client, pid, _type="AuditEvent", _since="2000-01-01T00:00:00Z")
    assert {ev[0], ev[1]} <= {e["id"] for e in found}
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    _, found = _everything(client, pid, _type="AuditEvent", _since=later)
    assert found == []
    r = client.get(f"/fhir/Patient/{pid}/$everything", params={"_type": "AuditEvent", "_count": 0})
    assert r.json()["total"] >= 7 and "entry" not in r.json()
    for bad in ("e", "ex1", "e-1", "x"):
        r = client.get(f"/fhir/Patient/{pid}/$everything", params={"_type": "AuditEvent", "_cursor": bad})
        assert r.status_code == 400, (bad, r.text)


def test_everything_respects_the_callers_view_of_the_log(app, issue_token, people):
    pid = people["patient"]
    token = issue_token("user/Patient.rs user/Observation.rs", fhir_user=f"Practitioner/{people['practitioner']}")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        _, found = _everything(c, pid, _type="AuditEvent,Observation")
        assert found and all(e["resourceType"] != "AuditEvent" for e in found)
    token = issue_token("patient/*.rs", patient=pid)
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        _, found = _everything(c, pid, _type="AuditEvent")
        assert {people["events"][0], people["events"][1]} <= {e["id"] for e in found}


# ------------------------------------------------------------------ CapabilityStatement


def test_capability_statement_describes_what_the_log_serves(client):
    from fhir_server.audit.log_search import SUPPORTED

    cs = client.get("/fhir/metadata").json()
    entry = next(r for r in cs["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert [i["code"] for i in entry["interaction"]] == ["read", "vread", "history-instance", "history-type",
                                                         "search-type", "create"]
    assert {p["name"] for p in entry["searchParam"]} == {s for s in SUPPORTED if ":" not in s}
    assert all(p["type"] and p.get("definition") for p in entry["searchParam"] if not p["name"].startswith("_"))
    assert sorted(entry["searchInclude"]) == ["AuditEvent:agent", "AuditEvent:entity", "AuditEvent:patient"]
    assert not entry.get("searchRevInclude") and entry["conditionalDelete"] == "not-supported"
    assert not entry["updateCreate"] and not entry["conditionalUpdate"]
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"update", "delete"} <= {i["code"] for i in patient["interaction"]}


# ------------------------------------------------------------------ $export


@pytest.fixture
def exporter(tmp_path):
    """An app on a database of its own (exports cover all of it), two patients and events:
    naming A (3), naming B (2), naming nobody (1), an audit source's event naming A."""
    from tests.operations.test_export import Server

    s = Server(tmp_path)
    a, b = s.patient("A"), s.patient("B")
    old = datetime(2024, 1, 1, tzinfo=timezone.utc)
    log_insert(s.db, [_facts("ea", data=[("Patient", a)], patients=[a], recorded=old + timedelta(days=i)) for i in range(3)]
               + [_facts("eb", data=[("Patient", b)], patients=[b], action="C", subtype="create") for _ in range(2)]
               + [_facts("none")])
    source = {"resourceType": "AuditEvent", "recorded": "2026-01-01T10:00:00Z", "action": "E", "outcome": "0",
              "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
              "agent": [{"requestor": True, "who": {"reference": f"Patient/{a}"}}],
              "source": {"observer": {"display": "another system"}}}
    s.create(source)
    s.group = s.create({"resourceType": "Group", "type": "person", "actual": True, "member": [{"entity": {"reference": f"Patient/{a}"}}]})
    s.a, s.b = a, b
    yield s
    s.close()


def _export(s, path="/fhir/$export", **kw) -> tuple[dict, list[dict]]:
    """Run an export to its end: (the manifest, its AuditEvent lines)."""
    status = s.kick_off(path, **kw)
    s.app.state.audit_writer.flush()  # events of requests before the kick-off: in the log before the job reads it
    manifest = s.finish(status)
    return manifest, s.download(manifest).get("AuditEvent", [])


def _logged_until(s, at: str, naming: set[str] | None = None) -> dict[str, dict]:
    """The log's events last updated at or before `at` (those naming one of `naming`), as read."""
    from fhir_server.audit.log import render
    from fhir_server.storage.schema import audit_log

    tx = datetime.fromisoformat(at.replace("Z", "+00:00"))
    with s.db.read() as conn:
        rows = conn.execute(select(audit_log.c.id, audit_log.c.doc).where(audit_log.c.last_updated <= tx)).all()
    events = {r.id: json.loads(render(r.id, bytes(r.doc))) for r in rows}
    if naming is not None:
        refs = {f"Patient/{p}" for p in naming}
        events = {k: e for k, e in events.items()
                  if refs & ({x.get("what", {}).get("reference") for x in e.get("entity", [])}
                             | {x.get("who", {}).get("reference") for x in e.get("agent", [])})}
    return events


def _tags(lines: list[dict]) -> list[str]:
    return sorted(a["altId"][2:] for e in lines for a in e.get("agent", []) if a.get("altId", "").startswith("s-"))


def test_system_export_writes_the_log(exporter):
    s = exporter
    for params in ({"_type": "AuditEvent"}, {"_type": "AuditEvent,Patient"}):
        manifest, lines = _export(s, params=params)
        expected = _logged_until(s, manifest["transactionTime"])
        assert len(lines) == len({e["id"] for e in lines})  # each event once
        assert {e["id"]: e for e in lines} == expected  # every event up to the kick-off, as a read answers it
        assert _tags(lines).count("ea") == 3 and _tags(lines).count("none") == 1
        assert [o["count"] for o in manifest["output"] if o["type"] == "AuditEvent"] == [len(lines)]
    manifest, lines = _export(s, params={"_type": "Patient"})
    assert lines == [] and all(o["type"] == "Patient" for o in manifest["output"])
    manifest, lines = _export(s)  # without _type: the record, not the log (as $everything)
    assert lines == [] and manifest["output"] and all(o["type"] != "AuditEvent" for o in manifest["output"])


def test_patient_and_group_exports_take_the_events_naming_their_patients(exporter, monkeypatch):
    s = exporter
    manifest, lines = _export(s, "/fhir/Patient/$export", params={"_type": "AuditEvent"})
    assert {e["id"]: e for e in lines} == _logged_until(s, manifest["transactionTime"], {s.a, s.b})
    assert "none" not in _tags(lines) and _tags(lines).count("eb") == 2
    for big in (False, True):
        if big:  # more patients than matched in SQL: matched per batch
            monkeypatch.setattr("fhir_server.operations.export_job.SQL_PATIENT_LIST_MAX", 0)
        manifest, lines = _export(s, f"/fhir/Group/{s.group}/$export", params={"_type": "AuditEvent"})
        expected = _logged_until(s, manifest["transactionTime"], {s.a})
        assert {e["id"]: e for e in lines} == expected and len(expected) >= 5  # 3 + the source's + writes about A
        assert "eb" not in _tags(lines)
        assert any(e["agent"][0]["who"].get("reference") == f"Patient/{s.a}" for e in lines)  # the audit source's
    manifest, lines = _export(s, "/fhir/Patient/$export", params={"_type": "AuditEvent", "patient": f"Patient/{s.b}"})
    assert {e["id"]: e for e in lines} == _logged_until(s, manifest["transactionTime"], {s.b})


def test_export_since_and_type_filter_on_the_log(exporter):
    s = exporter
    manifest, lines = _export(s, params={"_type": "AuditEvent", "_since": "2025-01-01T00:00:00Z"})
    assert lines and "ea" not in _tags(lines) and "none" in _tags(lines)
    manifest, lines = _export(s, params=[("_type", "AuditEvent"), ("_typeFilter", "AuditEvent?action=C&subtype=create")])
    assert lines and all(e["action"] == "C" for e in lines) and _tags(lines).count("eb") == 2
    r = s.client.get("/fhir/$export", params={"_type": "AuditEvent", "_typeFilter": "AuditEvent?site=x"},
                     headers={"Prefer": "respond-async"})
    assert r.status_code == 400 and "site" in r.text
    r = s.client.get("/fhir/$export", params={"_type": "AuditEvent", "_typeFilter": "AuditEvent?date=notadate"},
                     headers={"Prefer": "respond-async"})
    assert r.status_code == 400
    # a value the database cannot hold (PostgreSQL: NUL) fails the kick-off, not the job
    r = s.client.get("/fhir/$export", params={"_type": "AuditEvent", "_typeFilter": "AuditEvent?altid=a%00b"},
                     headers={"Prefer": "respond-async"})
    assert r.status_code == 400 or r.status_code == 202 and s.finish(r.headers["content-location"])["error"] == []


def test_export_of_the_log_resumes_after_a_crash_without_duplicates(exporter, monkeypatch):
    from fhir_server.jobs import queue
    from fhir_server.jobs.runner import run_pending
    from fhir_server.operations import export_job

    s = exporter
    monkeypatch.setattr(export_job, "BATCH_SIZE", 2)
    monkeypatch.setattr(export_job, "CHECKPOINT_SECONDS", 0)
    status = s.kick_off(params={"_type": "AuditEvent"})
    s.app.state.audit_writer.flush()
    job = queue.claim(s.db, ["export"], "worker-1", lease_seconds=60)
    ctx = queue.JobContext(s.db, s.settings, job, "worker-1", 60)
    real, calls = ctx.checkpoint, []

    def dying_checkpoint(cursor, progress=None):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker died")
        real(cursor, progress)

    ctx.checkpoint = dying_checkpoint
    with pytest.raises(RuntimeError):
        export_job.run_export(ctx)
    with s.db.read() as conn:
        saved = queue.get(conn, job.id)
    assert saved.cursor["total"] == 4 and saved.cursor["after"][0] == "log"
    with s.db.write() as conn:
        from sqlalchemy import update

        from fhir_server.storage.schema import jobs
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(lease_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert run_pending(s.db, s.settings, owner="worker-2") == 1
    manifest = s.finish(status)
    lines = s.download(manifest)["AuditEvent"]
    assert sorted(e["id"] for e in lines) == sorted(_logged_until(s, manifest["transactionTime"]))


def test_a_patient_exports_only_the_events_naming_them(exporter):
    from tests.conftest import make_token

    s = exporter
    token = make_token("patient/*.rs", patient=s.a)
    with TestClient(s.app, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get("/fhir/Patient/$export", params={"_type": "AuditEvent"}, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        s.app.state.audit_writer.flush()
        from fhir_server.jobs.runner import run_pending

        run_pending(s.db, s.settings)
        manifest = c.get(r.headers["content-location"]).json()
        lines = [json.loads(x) for item in manifest["output"] for x in c.get(item["url"]).content.splitlines()]
    assert {e["id"]: e for e in lines} == _logged_until(s, manifest["transactionTime"], {s.a})
    assert "eb" not in _tags(lines) and "none" not in _tags(lines)


# ------------------------------------------------------------------ $validate on an event


def test_validate_an_event_instance_from_the_log(app, client, issue_token, people):
    ev = people["events"]
    r = client.get(f"/fhir/AuditEvent/{ev[2]}/$validate")
    assert r.status_code == 200 and r.json()["resourceType"] == "OperationOutcome", r.text
    r = client.post(f"/fhir/AuditEvent/{ev[2]}/$validate?mode=delete")
    assert r.status_code == 200 and any(i["code"] == "not-supported" for i in r.json()["issue"])
    assert client.get("/fhir/AuditEvent/no-such-event/$validate").status_code == 404
    token = issue_token("patient/*.rs", patient=people["patient"])
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"/fhir/AuditEvent/{ev[0]}/$validate").status_code == 200
        assert c.get(f"/fhir/AuditEvent/{ev[2]}/$validate").status_code == 404  # not about them


# ------------------------------------------------------------------ _has


def test_has_through_auditevent_matches_from_the_log(app, client, issue_token, people):
    alt = f"s-{people['tag']}"

    def ids(c, res_type, name, value=alt, status=200):
        r = c.get(f"/fhir/{res_type}", params={name: value, "_count": 100})
        assert r.status_code == status, r.text
        return {m["id"] for m in _entries(r.json(), "match")} if status == 200 else None

    assert ids(client, "Patient", "_has:AuditEvent:entity:altid") == {people["patient"], people["other"]}
    assert ids(client, "Patient", "_has:AuditEvent:agent:altid") == {people["patient"]}  # acting for them
    assert ids(client, "Patient", "_has:AuditEvent:patient:altid") == {people["patient"], people["other"]}
    assert ids(client, "Practitioner", "_has:AuditEvent:agent:altid") == {people["practitioner"]}
    assert ids(client, "Practitioner", "_has:AuditEvent:patient:altid") == set()
    assert ids(client, "Observation", "_has:AuditEvent:entity:altid") == {people["observation"]}
    r = client.get("/fhir/Observation", params={"_has:AuditEvent:entity:action": "C", "_id": people["observation"]})
    assert {m["id"] for m in _entries(r.json(), "match")} == {people["observation"]}  # its create (one of many in the database)
    r = client.get("/fhir/Observation", params={"_has:AuditEvent:entity:action": "D", "_id": people["observation"]})
    assert _entries(r.json(), "match") == []
    assert ids(client, "Patient", "_has:AuditEvent:entity:altid", "s-no-such") == set()
    ids(client, "Patient", "_has:AuditEvent:source:altid", status=400)
    ids(client, "Patient", "_has:AuditEvent:entity:site", "x", status=400)
    ids(client, "Patient", "_has:AuditEvent:entity:date", "notadate", status=400)
    token = issue_token("patient/*.rs", patient=people["patient"])
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        assert ids(c, "Observation", "_has:AuditEvent:entity:altid") == set()  # that event does not name them
        assert ids(c, "Patient", "_has:AuditEvent:entity:altid") == {people["patient"]}
    token = issue_token("user/Patient.rs", fhir_user=f"Practitioner/{people['practitioner']}")
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        ids(c, "Patient", "_has:AuditEvent:entity:altid", status=403)


def test_include_of_an_auditevent_target_comes_from_the_log(app, client, issue_token, people):
    ev = people["events"]
    prov = client.post("/fhir/Provenance", json={
        "resourceType": "Provenance", "recorded": "2026-01-01T10:00:00Z",
        "target": [{"reference": f"AuditEvent/{ev[0]}"}, {"reference": f"AuditEvent/{ev[2]}"}, {"reference": f"Patient/{people['patient']}"}],
        "agent": [{"who": {"reference": f"Practitioner/{people['practitioner']}"}}]})
    assert prov.status_code == 201, prov.text
    pid = prov.json()["id"]
    r = client.get("/fhir/Provenance", params={"_id": pid, "_include": "Provenance:target"})
    got = {(e["resourceType"], e["id"]) for e in _entries(r.json(), "include")}
    assert got == {("AuditEvent", ev[0]), ("AuditEvent", ev[2]), ("Patient", people["patient"])}
    r = client.get("/fhir/Provenance", params={"_id": pid, "_include": "Provenance:target:AuditEvent"})
    assert {e["id"] for e in _entries(r.json(), "include")} == {ev[0], ev[2]}
    token = issue_token("patient/*.rs", patient=people["patient"])
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get("/fhir/Provenance", params={"_id": pid, "_include": "Provenance:target"})
        assert r.status_code == 200, r.text
        got = {(e["resourceType"], e["id"]) for e in _entries(r.json(), "include")}
        assert ("AuditEvent", ev[2]) not in got  # not about them
        assert [m["id"] for m in _entries(r.json(), "match")] == [pid] and ("AuditEvent", ev[0]) in got


def test_meta_of_an_event_from_the_log_and_meta_changes_refused(app, client, issue_token, people):
    ev = people["events"]
    r = client.get(f"/fhir/AuditEvent/{ev[0]}/$meta")
    assert r.status_code == 200, r.text
    meta = {p["name"]: p for p in r.json()["parameter"]}["return"]["valueMeta"]
    assert meta == client.get(f"/fhir/AuditEvent/{ev[0]}").json()["meta"]
    assert client.get("/fhir/AuditEvent/no-such-event/$meta").status_code == 404
    body = {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [{"system": "urn:x", "code": "y"}]}}]}
    for op in ("$meta-add", "$meta-delete"):
        r = client.post(f"/fhir/AuditEvent/{ev[0]}/{op}", json=body)
        assert r.status_code == 405 and r.json()["resourceType"] == "OperationOutcome", (op, r.text)
    assert client.get(f"/fhir/AuditEvent/{ev[0]}").json()["meta"] == meta
    token = issue_token("patient/*.rs", patient=people["patient"])
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"/fhir/AuditEvent/{ev[0]}/$meta").status_code == 200
        assert c.get(f"/fhir/AuditEvent/{ev[2]}/$meta").status_code == 404  # not about them
