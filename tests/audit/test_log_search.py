"""The access log's own search (audit.log_search) against the R4 AuditEvent search parameters.

For events of every shape the server logs (and one an audit source sent), each supported
parameter's values as the generic FHIRPath extractor finds them in the rendered event must
find that event, and a value the event does not hold must not.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from fhir_server.audit.balp import SERVER_DEVICE, AuditFacts

from .conftest import log_insert, logged_events

_TOKEN_PARAMS = ("type", "subtype", "action", "outcome", "altid")
_REFERENCE_PARAMS = ("patient", "agent", "entity")


def _variants(tag: str) -> list[AuditFacts]:
    now = datetime.now(timezone.utc)
    return [
        AuditFacts("rest", "read", "R", 200, now, subject=f"s-{tag}", client_id=f"c-{tag}", fhir_user=f"Patient/1{tag}",
                   token_id="j", client_address="127.0.0.1", server_base="http://x/fhir", request_id=f"r1-{tag}",
                   data=[("Observation", f"o1{tag}")], patients=[f"p1{tag}", f"p2{tag}"], query="code=x",
                   acting_for=f"Patient/9{tag}"),
        AuditFacts("login", "login", "E", 401, now - timedelta(days=3), detail="bad", client_address="10.0.0.1",
                   request_id=f"r2-{tag}"),
        AuditFacts("rest", "$everything", "E", 200, now, subject=f"Ä Öberg {tag}", data=[("Patient", f"p1{tag}")],
                   patients=[f"p1{tag}"], request_id=f"r3-{tag}"),
        AuditFacts("hl7v2", "create", "C", 422, now, subject=f"mllp:{tag}", request_id=f"r4-{tag}"),
        AuditFacts("rest", "update", "U", 200, now, subject=f"s5-{tag}", fhir_user=f"Practitioner/pr{tag}",
                   data=[("Condition", f"c5{tag}/_history/3")], patients=[f"p5{tag}"], request_id=f"r5-{tag}"),
    ]


def _values(event: dict) -> dict[str, list[str]]:
    """Search values per parameter, from the generic extractor's index rows of `event`."""
    from fhir_server.search.indexer import extract

    out: dict[str, list[str]] = {}
    rows = extract("AuditEvent", event)
    for r in rows.get("reference", []):
        if r["param"] not in _REFERENCE_PARAMS:
            continue
        if r["target_id"]:
            ref = f"{r['target_type']}/{r['target_id']}"
            if ref != SERVER_DEVICE:  # the server itself, on every event it logs: not indexed (docs/audit.md)
                out.setdefault(r["param"], []).append(ref)
        elif r["ident_value"] and r["param"] != "patient":
            out.setdefault(f"{r['param']}:identifier", []).append(r["ident_value"])
    for r in rows.get("token", []):
        if r["param"] in _TOKEN_PARAMS:
            out.setdefault(r["param"], []).append(f"{r['system']}|{r['code']}" if r["system"] else r["code"])
            out[r["param"]].append(r["code"])
    for r in rows.get("date", []):
        if r["param"] == "date":
            out.setdefault("date", []).append(r["low"].isoformat(timespec="milliseconds"))
    out["_id"] = [event["id"]]
    return out


@pytest.fixture
def audited(client):
    tag = uuid.uuid4().hex[:8]
    log_insert(client.app.state.db, _variants(tag))
    events = [e for e in logged_events(client.app.state.db) if tag in str(e)]
    source_event = {"resourceType": "AuditEvent", "recorded": "2026-01-01T10:00:00Z", "outcome": "4", "action": "E",
                    "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
                    "subtype": [{"system": "urn:x", "code": "a"}, {"system": "urn:x", "code": f"b{tag}"}],
                    "agent": [{"requestor": True, "who": {"reference": f"Practitioner/ext{tag}"}, "altId": f"alt{tag}"},
                              {"requestor": False, "who": {"identifier": {"value": f"sys{tag}"}}}],
                    "source": {"observer": {"display": "another system"}},
                    "entity": [{"what": {"reference": f"Patient/ext{tag}"}}, {"what": {"identifier": {"value": f"doc{tag}"}}}]}
    r = client.post("/fhir/AuditEvent", json=source_event)
    assert r.status_code == 201, r.text
    events.append(r.json())
    assert len(events) == 6
    return events


def test_each_parameter_finds_the_event_that_holds_the_value(client, audited):
    for event in audited:
        values = _values(event)
        assert {"_id", "type", "action", "outcome", "date"} <= set(values), values
        for param, vals in values.items():
            for v in vals:
                q = {param: v if param != "date" else f"eq{v}", "_id": event["id"]} if param != "_id" else {"_id": v}
                r = client.get("/fhir/AuditEvent", params=q)
                assert r.status_code == 200, (param, v, r.text)
                assert r.json()["total"] == 1, (param, v, event)
                miss = {**q, param: "no-such-value" if param not in ("date",) else "eq1999-01-01"}
                if param in _REFERENCE_PARAMS:
                    miss[param] = "Patient/no-such" if param == "patient" else "Practitioner/no-such"
                if param != "_id":
                    assert client.get("/fhir/AuditEvent", params=miss).json()["total"] == 0, (param, miss)


def test_a_second_subtype_and_absolute_references_are_found(client, audited):
    source = audited[-1]
    tag = source["subtype"][1]["code"][1:]
    assert client.get("/fhir/AuditEvent", params={"subtype": f"urn:x|b{tag}"}).json()["total"] == 1
    absolute = f"{client.base_url}/fhir/Patient/ext{tag}"

    def events(params) -> dict[str, dict]:
        bundle = client.get("/fhir/AuditEvent", params={**params, "_count": 500}).json()
        return {e["resource"]["id"]: e["resource"] for e in bundle.get("entry", [])}

    # the source's event and the event of its create name the patient; so do this test's own
    # searches of the log (an event about events is about their patients), which land in the
    # log whenever the writer flushes, so they are told apart, not counted
    client.app.state.audit_writer.flush()  # the subtype search's own event is in the log now
    found = events({"patient": absolute})
    assert len(found) >= 3
    assert source["id"] in found
    assert len([e for e in found.values() if e.get("action") == "C"]) == 1
    own_reads = [e for eid, e in found.items() if eid != source["id"] and e.get("action") != "C"]
    assert all(e["action"] in ("E", "R") and e["type"]["code"] == "rest" for e in own_reads), own_reads
    assert source["id"] in events({"entity:Patient": f"ext{tag}"})


def test_driver_inserts_store_what_sqlalchemy_stores(tmp_path):
    """SQLite: the log's rows sent through the driver's executemany (audit.store.insert_rows)
    are stored exactly as SQLAlchemy's own INSERT stores them."""
    from sqlalchemy import select

    from fhir_server.audit import log
    from fhir_server.storage.database import Database
    from fhir_server.storage.migrate import upgrade
    from fhir_server.storage.schema import audit_log, audit_log_refs

    stored = []
    facts = _variants("x")
    for driver in (True, False):
        db = Database(f"sqlite:///{tmp_path / f'log-{driver}.sqlite'}")
        upgrade(db.engine)
        entries = [log.entry_of_facts(f, event_id=f"e{i}") for i, f in enumerate(facts)]
        with db.write() as conn:
            if driver:
                log.insert(conn, entries)
            else:
                conn.execute(audit_log.insert(), [dict(zip(log.MAIN_COLUMNS, (i + 1, *e.main))) for i, e in enumerate(entries)])
                conn.execute(audit_log_refs.insert(), [dict(zip(log.REF_COLUMNS, (i + 1, v, r)))
                                                       for i, e in enumerate(entries) for v, r in e.refs.items()])
        with db.read() as conn:
            stored.append([conn.exec_driver_sql(f"SELECT * FROM {t.name} ORDER BY 1, 2").all() for t in (audit_log, audit_log_refs)]
                          + [conn.execute(select(audit_log)).all()])
        db.dispose()
    assert stored[0] == stored[1] and len(stored[0][1]) > 15


def test_a_batch_stores_what_single_events_store(client):
    """PostgreSQL writes a batch writer's events by COPY of its own (audit.log._copy) and a
    write's few with the transaction's other rows; both must store the same rows, also for
    values COPY's text format escapes or cannot hold (tab, newline, backslash, NUL, a lone
    surrogate). SQLite takes one path; the test holds there too."""
    from sqlalchemy import select

    from fhir_server.audit import log
    from fhir_server.storage.schema import audit_log, audit_log_refs

    tag = uuid.uuid4().hex[:8]
    odd = ["tab\there", "new\nline\r", "back\\slash \\N", "nul\x00x", "lone\ud800", "Łódź ÅÄÖ 東京"]
    facts = [f for i in range(7) for f in _variants(f"{tag}{odd[i % len(odd)]}{i}")]
    assert len(facts) >= log._COPY_MIN
    db = client.app.state.db
    with db.write() as conn:
        log.insert(conn, [log.entry_of_facts(f, event_id=f"b{tag}-{i:03d}") for i, f in enumerate(facts)])
    for i, f in enumerate(facts):
        with db.write() as conn:
            log.insert(conn, [log.entry_of_facts(f, event_id=f"s{tag}-{i:03d}")])
    a, r = audit_log.c, audit_log_refs.c
    with db.read() as conn:
        def stored(prefix):
            rows = conn.execute(select(audit_log).where(a.id.like(f"{prefix}{tag}-%")).order_by(a.id)).all()
            refs = conn.execute(select(r.event_pk, r.value, r.roles).where(r.event_pk.in_([row.pk for row in rows]))).all()
            by_pk = {}
            for pk, value, roles in refs:
                by_pk.setdefault(pk, set()).add((value, roles))
            return [(row.id[len(prefix):], *row[2:], sorted(by_pk[row.pk])) for row in rows]

        batch, single = stored("b"), stored("s")
    assert len(batch) == len(facts)
    for b, s in zip(batch, single):
        assert b == s, [(x, y) for x, y in zip(b, s) if x != y]
    values = {v for row in batch for v, _ in row[-1]}
    assert any("\t" in v for v in values) and any("\\" in v for v in values) and any("東京" in v for v in values)
    assert any("\ufffd" in v for v in values)  # NUL and the lone surrogate, as U+FFFD


def test_documents_of_earlier_versions_render_as_rows_do():
    """Events are stored as facts rows ([values in FACT_FIELDS order], []); those stored by
    earlier versions hold {"f": {field: value}}, and rows stored before a field was added are
    shorter. All three render the same AuditEvent."""
    import dataclasses

    import orjson

    from fhir_server.audit import log
    from fhir_server.audit.balp import FACT_FIELDS

    for facts in _variants(uuid.uuid4().hex[:8]):
        entry = log.entry_of_facts(facts, event_id="e1")
        row_doc = entry.main[-1]
        assert orjson.loads(row_doc)[0][FACT_FIELDS.index("request_id")] == facts.request_id
        old_doc = orjson.dumps({"f": dataclasses.asdict(facts), "l": []})
        assert len(row_doc) < len(old_doc)
        rendered = orjson.loads(log.render("e1", row_doc))
        assert rendered == orjson.loads(log.render("e1", old_doc))
        assert rendered["entity"] and rendered["agent"] and rendered["id"] == "e1"
        last = FACT_FIELDS[-1]  # a row from before the last field existed: that field's default
        short = orjson.dumps([orjson.loads(row_doc)[0][:-1], []])
        older = dataclasses.replace(facts, **{last: dataclasses.fields(facts)[-1].default_factory()})
        assert orjson.loads(log.render("e1", short)) == orjson.loads(log.render("e1", log.entry_of_facts(older).main[-1]))


def test_paging_sorting_and_totals(client):
    tag = uuid.uuid4().hex[:8]
    base = datetime(2025, 3, 1, tzinfo=timezone.utc)
    log_insert(client.app.state.db, [AuditFacts("rest", "read", "R", 200, base + timedelta(minutes=(i * 7) % 25),
                                                 subject=f"pager-{tag}", data=[("Patient", f"pg{tag}")], patients=[f"pg{tag}"])
                                      for i in range(25)])
    for sort in ("date", "-date", None):
        params = {"altid": f"pager-{tag}", "_count": 10, **({"_sort": sort} if sort else {})}
        bundle = client.get("/fhir/AuditEvent", params=params).json()
        assert bundle["total"] == 25
        seen = []
        while True:
            seen += [e["resource"]["recorded"] for e in bundle.get("entry", [])]
            nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
            if not nxt:
                break
            bundle = client.get(nxt[0]).json()
        assert len(seen) == 25
        if sort:
            assert seen == sorted(seen, reverse=sort.startswith("-"))
    assert client.get("/fhir/AuditEvent", params={"altid": f"pager-{tag}", "_summary": "count"}).json()["total"] == 25
    r = client.get("/fhir/AuditEvent", params={"altid": f"pager-{tag}", "_sort": "outcome"})
    assert r.status_code == 400


def test_include_returns_the_referenced_patient(client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    client.get(f"/fhir/Patient/{pid}")
    client.app.state.audit_writer.flush()
    bundle = client.get("/fhir/AuditEvent", params={"patient": pid, "_include": "AuditEvent:patient"}).json()
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert [(p["resourceType"], p["id"]) for p in included] == [("Patient", pid)]


def test_parameters_the_log_does_not_index_are_refused_or_ignored_when_lenient(client):
    r = client.get("/fhir/AuditEvent", params={"site": "x"})
    assert r.status_code == 400 and "supports" in r.text
    r = client.get("/fhir/AuditEvent", params={"site": "x", "_count": 1}, headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200
    assert any(e["search"]["mode"] == "outcome" for e in r.json().get("entry", []))
    assert client.get("/fhir", params={"_type": "AuditEvent,Patient"}).status_code == 400
    assert client.get("/fhir", params={"_type": "AuditEvent", "_count": 1}).json()["type"] == "searchset"


def test_versions_and_history_of_an_event(client, audited):
    eid = audited[0]["id"]
    assert client.get(f"/fhir/AuditEvent/{eid}/_history/1").json()["id"] == eid
    assert client.get(f"/fhir/AuditEvent/{eid}/_history/2").status_code == 404
    hist = client.get(f"/fhir/AuditEvent/{eid}/_history").json()
    assert hist["type"] == "history" and [e["resource"]["id"] for e in hist["entry"]] == [eid]
    typed = client.get("/fhir/AuditEvent/_history", params={"_count": 3}).json()
    assert len(typed["entry"]) == 3 and any(link["relation"] == "next" for link in typed["link"])
    assert client.get("/fhir/AuditEvent/no-such-event").status_code == 404


def test_events_in_a_transaction_are_logged_and_changes_refused(client):
    tag = uuid.uuid4().hex[:8]
    event = {"resourceType": "AuditEvent", "recorded": "2026-02-01T10:00:00Z",
             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
             "agent": [{"requestor": True, "who": {"identifier": {"value": f"tx{tag}"}}}],
             "source": {"observer": {"display": "another system"}}}
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "POST", "url": "AuditEvent"}, "resource": event}]}
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    found = client.get("/fhir/AuditEvent", params={"agent:identifier": f"tx{tag}"}).json()
    assert found["total"] == 1
    eid = found["entry"][0]["resource"]["id"]
    put = {"resourceType": "Bundle", "type": "transaction",
           "entry": [{"request": {"method": "PUT", "url": f"AuditEvent/{eid}"}, "resource": {**event, "id": eid}}]}
    assert client.post("/fhir", json=put).status_code == 405
    new_id = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "PUT", "url": "AuditEvent/brand-new"}, "resource": {**event, "id": "brand-new"}}]}
    out = client.post("/fhir", json=new_id).json()
    assert out["entry"][0]["response"]["status"].startswith("405")


def test_a_patient_reads_only_events_about_them(app, client, issue_token, audited):
    me = audited[0]["entity"][0]["what"]["reference"].split("/")[1]  # p1<tag>
    with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {issue_token('patient/*.rs', patient=me)}"}) as c:
        bundle = c.get("/fhir/AuditEvent", params={"_count": 100}).json()
        ids = {e["resource"]["id"] for e in bundle.get("entry", [])}
        assert audited[0]["id"] in ids and audited[2]["id"] in ids  # both name p1<tag>
        assert audited[4]["id"] not in ids and audited[1]["id"] not in ids
        assert c.get(f"/fhir/AuditEvent/{audited[4]['id']}").status_code == 404
        assert c.get(f"/fhir/AuditEvent/{audited[0]['id']}").status_code == 200
        assert c.get(f"/fhir/Patient/{me}/AuditEvent").json()["total"] >= 2


def test_event_and_request_ids_are_version_7_uuids_in_time_order(monkeypatch):
    """RFC 9562 version 7: the first 48 bits are Unix milliseconds, so later ids sort later."""
    import time
    import uuid as uuidlib

    from fhir_server import ids

    made = []
    for ms in (1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000):
        monkeypatch.setattr(ids.time, "time_ns", lambda ms=ms: ms * 1_000_000)
        made += [ids.new_time_ordered_id() for _ in range(50)]
    monkeypatch.setattr(ids.time, "time_ns", time.time_ns)
    parsed = [uuidlib.UUID(x) for x in made]
    assert all(u.version == 7 and u.variant == uuidlib.RFC_4122 and str(u) == x for u, x in zip(parsed, made))
    assert [int(u.hex[:12], 16) for u in parsed[::50]] == [1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000]
    assert sorted(made[:50])[-1] < sorted(made[50:100])[0] < sorted(made[100:])[0]
    assert len(set(made)) == len(made) and len(ids.new_time_ordered_hex()) == 32
