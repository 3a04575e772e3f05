"""PostgreSQL's planner statistics kept fresh after bulk loads.

autovacuum analyzes a table once a tenth of it has changed, but only at its next round
(autovacuum_naptime: a minute by default). A search planned in between uses statistics
taken when the table was (nearly) empty, or held other resource types: PostgreSQL then
estimates one row where there are thousands and chooses a nested loop that reads every
index entry of a type per row. Measured on a fresh database right after loading 2,000
Observations (bench/bench_protected.py): a patient's Observations took 7.6 s instead of 1 ms,
for as long as a minute.

So the server counts the rows its own writes insert per table (`count_inserted`, called by
the write buffer's flush and the access log's COPY; reported once the transaction commits,
so a look never runs before the rows it counts are visible). When a table has grown by at
least `MIN_ROWS` and by more than half of what its statistics last counted
(pg_class.reltuples; -1: never analyzed), it runs ANALYZE on that table in a background
thread, one at a time per table. ANALYZE samples at most 300 rows per statistics target unit, so it costs
milliseconds on a small table and seconds on a large one, and on a large table it is rarely
due: growth by half is the trigger. A database role that may not analyze (not the tables'
owner) gets one warning and autovacuum's pace.

`fhir-server load` ends with `analyze_grown_tables`: its worker processes do not live to run
their own looks, so it asks PostgreSQL which tables changed by that much since their last
ANALYZE (pg_stat_user_tables.n_mod_since_analyze, every process's writes) and analyzes them
before the server is started on the loaded database.
"""

from __future__ import annotations

import logging
import threading
import weakref

from sqlalchemy import text
from sqlalchemy.engine import Engine

log = logging.getLogger("fhir_server.storage")

MIN_ROWS = 1000  # rows inserted into a table before its statistics are looked at
GROWTH = 0.5  # ... and the share of its last counted rows they must reach
_COUNTED = text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)")


class _Tracker:
    """The counts of one database (engine): rows inserted per table since its statistics were
    last taken, the count from which a look is due, the looks running."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inserted: dict[str, int] = {}
        self.due_at: dict[str, float] = {}
        self.running: dict[str, threading.Thread] = {}
        self.refused = False  # the role may not ANALYZE: autovacuum's pace


_trackers: "weakref.WeakKeyDictionary[Engine, _Tracker]" = weakref.WeakKeyDictionary()
_trackers_lock = threading.Lock()


_PENDING = "fhir_inserted_rows"  # storage.database.transaction_memo: table -> rows inserted


def count_inserted(conn, rows_by_table) -> None:
    """Count rows the transaction open on `conn` inserts: (table name, rows) pairs, reported
    when it commits (`transaction_ended`)."""
    from .database import transaction_memo

    pending = transaction_memo(conn, _PENDING)
    for table, rows in rows_by_table:
        pending[table] = pending.get(table, 0) + rows


def transaction_ended(conn, committed: bool) -> None:
    """The transaction on `conn` ended: its counts go to `note_inserted` if it committed."""
    held = conn.info.pop(_PENDING, None)  # (transaction, counts): transaction_memo's entry
    if held and held[1] and committed:
        note_inserted(conn.engine, held[1])


def note_inserted(engine: Engine, rows_by_table: dict[str, int]) -> None:
    """Count rows inserted per table (PostgreSQL); start a look at each table where enough
    have gathered. Cheap: one dict lookup and one lock per transaction; never waits for
    the database."""
    tracker = _trackers.get(engine)
    if tracker is None:
        with _trackers_lock:
            tracker = _trackers.setdefault(engine, _Tracker())
    if tracker.refused:
        return
    started = []
    with tracker.lock:
        inserted, due_at, running = tracker.inserted, tracker.due_at, tracker.running
        for table, rows in rows_by_table.items():
            total = inserted.get(table, 0) + rows
            if total < due_at.get(table, MIN_ROWS) or table in running:
                inserted[table] = total
                continue
            inserted[table] = 0
            worker = running[table] = threading.Thread(
                target=_analyze_if_grown, args=(engine, tracker, table, total), name=f"fhir-analyze-{table}", daemon=True)
            started.append(worker)
    for worker in started:
        worker.start()


def wait_idle(engine: Engine, timeout: float = 30.0) -> None:
    """Wait until no look or ANALYZE of `engine`'s tables is running (tests)."""
    tracker = _trackers.get(engine)
    for worker in list(tracker.running.values()) if tracker else ():
        worker.join(timeout)


def _analyze_if_grown(engine: Engine, tracker: _Tracker, table: str, grown: int) -> None:
    analyzed, counted = False, None
    try:
        with engine.connect() as conn:
            counted = conn.execute(_COUNTED, {"t": table}).scalar()
            if counted is not None and (counted < 0 or grown > GROWTH * counted):
                conn.execute(text(f'ANALYZE "{table}"'))
                conn.commit()
                analyzed = True
                counted = conn.execute(_COUNTED, {"t": table}).scalar()
    except Exception as exc:  # noqa: BLE001 - statistics are an optimisation; autovacuum remains
        if "must be owner" in str(exc) or "permission denied" in str(exc):
            tracker.refused = True
        log.warning("could not refresh the planner statistics of %s: %s", table, exc)
    finally:
        with tracker.lock:
            if not analyzed:  # not due yet: the rows still count towards the next look
                tracker.inserted[table] = tracker.inserted.get(table, 0) + grown
            tracker.due_at[table] = max(MIN_ROWS, GROWTH * (counted or 0))
            tracker.running.pop(table, None)


_GROWN = text(
    "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.schemaname = current_schema() AND s.n_mod_since_analyze >= :min_rows "
    "AND (c.reltuples < 0 OR s.n_mod_since_analyze > :growth * c.reltuples) ORDER BY s.relname")


def analyze_grown_tables(engine: Engine) -> list[str]:
    """PostgreSQL: ANALYZE, now, every table of the schema that changed by at least `MIN_ROWS`
    rows and by more than `GROWTH` of its last count since its statistics were taken (by any
    process; PostgreSQL reports a process's changes by the time it has exited). Returns the
    tables analyzed; nothing on other databases."""
    if engine.dialect.name != "postgresql":
        return []
    wait_idle(engine)  # this process's own looks first
    with engine.connect() as conn:
        tables = list(conn.execute(_GROWN, {"min_rows": MIN_ROWS, "growth": GROWTH}).scalars())
        for table in tables:
            conn.execute(text(f'ANALYZE "{table}"'))
        conn.commit()
    return tables
