"""$changes: the registry pull sees every committed version once, in commit order,
also while writes commit out of order around it."""

from __future__ import annotations

import random
import threading
import time
import uuid
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from fhir_server.rest import interactions as ix
from fhir_server.rest.context import RequestContext


def _cursor(bundle) -> str:
    nxt = [l["url"] for l in bundle["link"] if l["relation"] == "next"][0]
    return parse_qs(urlparse(nxt).query)["_cursor"][0]


def pull(client, cursor=None, count=50, types="QuestionnaireResponse,Observation"):
    """Drain the feed from `cursor`: (entries, cursor to continue from)."""
    got = []
    while True:
        params = {"_type": types, "_count": str(count)}
        if cursor:
            params["_cursor"] = cursor
        r = client.get("/fhir/$changes", params=params)
        assert r.status_code == 200, r.text
        bundle = r.json()
        cursor = _cursor(bundle)
        got.extend(bundle.get("entry", []))
        if len(bundle.get("entry", [])) < count:
            return got, cursor


def _observation(tag: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": tag}}


def _write(db, tag: str, hold: float = 0.0) -> str:
    """Create an Observation in a transaction that stays open `hold` seconds after the write."""
    with db.write() as conn:
        out = ix.create(conn, RequestContext(base_url=""), "Observation", ix.ParsedResource.from_bytes(orjson.dumps(_observation(tag))))
        if hold:
            time.sleep(hold)
    return out.res_id


def pull_until(client, cursor, n: int, count: int = 50, timeout: float = 15.0, types: str = "QuestionnaireResponse,Observation"):
    """Pull until `n` entries came: the feed rightly holds rows back while another
    transaction of this database is open (the access log's writer, a job), and hands
    them out once it ends."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        page, cursor = pull(client, cursor, count=count, types=types)
        got += page
        if len(got) < n:
            time.sleep(0.05)
    return got, cursor


def test_pull_pages_in_commit_order_and_cursor_is_stable(client):
    _, cursor = pull(client)
    ids = [client.post("/fhir/Observation", json=_observation("order")).json()["id"] for _ in range(7)]
    got, cursor2 = pull_until(client, cursor, 7, count=3)
    assert [e["resource"]["id"] for e in got] == ids
    assert pull(client, cursor2)[0] == []  # nothing new: nothing repeated
    assert pull(client, cursor2)[1] == cursor2


def test_types_deletes_and_bad_parameters(client):
    _, cursor = pull(client)
    oid = client.post("/fhir/Observation", json=_observation("del")).json()["id"]
    client.delete(f"/fhir/Observation/{oid}")
    got, _ = pull_until(client, cursor, 2, types="Observation")
    assert [(e["request"]["method"], "resource" in e) for e in got] == [("POST", True), ("DELETE", False)]
    assert pull(client, cursor, types="QuestionnaireResponse")[0] == []
    assert client.get("/fhir/$changes", params={"_type": "Patient"}).status_code == 400
    assert client.get("/fhir/$changes", params={"_cursor": "garbage!"}).status_code == 400
    assert client.get("/fhir/$changes", params={"_count": "0"}).status_code == 400
    assert client.get("/fhir/$changes", params={"since": "x"}).status_code == 400


def test_out_of_order_commit_is_not_skipped(client, app):
    """A transaction that writes first and commits last: `_lastUpdated=gt` loses it, $changes does not."""
    db = app.state.db
    if db.dialect != "postgresql":
        pytest.skip("SQLite writers commit one at a time, so a commit cannot overtake another")
    _, cursor = pull(client)
    tag = uuid.uuid4().hex
    slow_id: list[str] = []
    slow = threading.Thread(target=lambda: slow_id.append(_write(db, tag, hold=1.5)))
    slow.start()
    time.sleep(0.5)  # the slow transaction has written (and stamped) its row
    fast_id = _write(db, tag)
    fast = client.get(f"/fhir/Observation/{fast_id}").json()
    # the naive puller now sees the fast row and remembers its lastUpdated ...
    naive_seen = client.get("/fhir/Observation", params={"code:text": tag}).json().get("entry", [])
    assert [e["resource"]["id"] for e in naive_seen] == [fast_id]
    got_during, cursor = pull(client, cursor)
    assert got_during == []  # held back behind the open transaction, not skipped
    slow.join()
    naive_next = client.get("/fhir/Observation", params={"code:text": tag, "_lastUpdated": "gt" + fast["meta"]["lastUpdated"]}).json()
    assert naive_next.get("entry", []) == []  # ... and loses the slow one for ever
    got, _ = pull_until(client, cursor, 2)
    assert sorted(e["resource"]["id"] for e in got) == sorted([slow_id[0], fast_id])


def test_concurrent_writes_no_gap_no_repeat(client, app):
    db = app.state.db
    _, cursor = pull(client)
    tag = uuid.uuid4().hex
    written: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        rnd = random.Random(n)
        for _ in range(12):
            rid = _write(db, tag, hold=rnd.choice([0, 0, 0.02, 0.08]))
            with lock:
                written.append(rid)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    pulled: list[str] = []
    pulls = 0
    while any(t.is_alive() for t in threads):
        got, cursor = pull(client, cursor, count=5)
        pulled.extend(e["resource"]["id"] for e in got)
        pulls += 1
        time.sleep(0.01)
    for t in threads:
        t.join()
    got, cursor = pull(client, cursor, count=5)
    pulled.extend(e["resource"]["id"] for e in got)
    stop.set()
    assert pulls > 1
    assert len(pulled) == len(set(pulled)), "a version was pulled twice"
    assert set(pulled) == set(written), f"missed {set(written) - set(pulled)}"
    assert len(written) == 48


def _pg_engine(app, database: str | None = None):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    url = app.state.db.engine.url
    if database:
        url = url.set(database=database)
    return create_engine(url, poolclass=NullPool)


def test_long_transaction_in_another_database_does_not_stall_the_feed(client, app):
    """A shared cluster: a transaction holding an id in ANOTHER database (here the
    cluster's `postgres` database) is none of this feed's business."""
    from sqlalchemy import text

    if app.state.db.dialect != "postgresql":
        pytest.skip("the bound by running transactions exists on PostgreSQL only")
    _, cursor = pull(client)
    other = _pg_engine(app, "postgres")
    try:
        with other.connect() as conn:
            with conn.begin():
                foreign_xid = int(conn.execute(text("SELECT pg_current_xact_id()::text::bigint")).scalar_one())
                rid = _write(app.state.db, uuid.uuid4().hex)
                # the old, cluster-wide bound would have held this row back
                with app.state.db.read() as rconn:
                    xmin = int(rconn.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one())
                assert xmin <= foreign_xid
                got, cursor = pull(client, cursor)
                assert [e["resource"]["id"] for e in got] == [rid]
    finally:
        other.dispose()


def test_uncommitted_write_in_this_database_holds_the_feed_back(client, app):
    """A write of this database that has its id but has not committed: later
    commits wait behind it (not returned), and it is returned once it commits."""
    if app.state.db.dialect != "postgresql":
        pytest.skip("SQLite writers commit one at a time, so a commit cannot overtake another")
    db = app.state.db
    _, cursor = pull(client)
    written, go_on = threading.Event(), threading.Event()
    slow_id: list[str] = []

    def slow() -> None:
        with db.write() as conn:
            out = ix.create(conn, RequestContext(base_url=""), "Observation", ix.ParsedResource.from_bytes(orjson.dumps(_observation("slow"))))
            from fhir_server.storage.repository import flush

            flush(conn)  # the feed row is in the table, uncommitted
            slow_id.append(out.res_id)
            written.set()
            go_on.wait(10)

    t = threading.Thread(target=slow)
    t.start()
    assert written.wait(10)
    fast_ids = [_write(db, "fast") for _ in range(3)]
    got, cursor_during = pull(client, cursor)
    assert got == [] and cursor_during == cursor  # held back, the cursor did not move past it
    go_on.set()
    t.join()
    got, _ = pull(client, cursor_during)
    assert [e["resource"]["id"] for e in got] == slow_id + fast_ids  # commit-id order: the slow one first
