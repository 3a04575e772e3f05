"""Database failures answered in FHIR terms (storage/faults.py), with real driver errors."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from fhir_server.storage.faults import classify, is_connection_error


def test_sqlite_unique_violation_is_a_409_without_database_text(tmp_path):
    conn = sqlite3.connect(tmp_path / "x.sqlite")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError) as info:
        conn.execute("INSERT INTO t VALUES ('a')")
    answer = classify(info.value)
    assert answer.status == 409 and answer.issues[0].code == "conflict"
    assert "UNIQUE" not in answer.issues[0].diagnostics and "t.id" not in answer.issues[0].diagnostics


def test_sqlite_busy_is_a_503_with_retry_after(tmp_path):
    path = tmp_path / "busy.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0.05)
    with pytest.raises(sqlite3.OperationalError) as info:
        other.execute("INSERT INTO t VALUES (1)")
    answer = classify(info.value)
    assert answer.status == 503 and answer.issues[0].code == "transient" and answer.headers["Retry-After"]


def test_refused_connection_is_a_connection_error():
    import socket

    from sqlalchemy import create_engine, text

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x")
    with pytest.raises(Exception) as info:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    assert is_connection_error(info.value)
    answer = classify(info.value)
    assert answer.status == 503 and str(port) not in answer.issues[0].diagnostics


def test_postgres_deadlock_is_a_409(database_url):
    """Two transactions locking two rows in opposite orders: PostgreSQL kills one (40P01)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url, pool_size=2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS deadlock_probe (k int PRIMARY KEY, v int)"))
        conn.execute(text("DELETE FROM deadlock_probe"))
        conn.execute(text("INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def worker(first: int, second: int) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("UPDATE deadlock_probe SET v = v + 1 WHERE k = :k"), {"k": first})
                barrier.wait()
                conn.execute(text("UPDATE deadlock_probe SET v = v + 1 WHERE k = :k"), {"k": second})
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=a) for a in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE deadlock_probe"))
    engine.dispose()
    assert len(failures) == 1
    answer = classify(failures[0])
    assert answer.status == 409 and answer.issues[0].code == "conflict"
    assert "deadlock" not in answer.issues[0].diagnostics.lower()


def test_unknown_errors_are_not_classified():
    assert classify(ValueError("x")) is None
    assert classify(FileNotFoundError("x")) is None
