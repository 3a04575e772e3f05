"""Keeping SQLite's query-planner statistics (sqlite_stat1) in step with the data.

Without statistics SQLite guesses that `res_type = ?` on an index narrows a search
more than `pk IN (<the index rows of one patient>)`, and so walks every resource of the
type: a patient's 10 Observations among 2,000 took 0.9 ms instead of 0.05 ms, and the
gap grows with the database. PostgreSQL's autovacuum keeps its statistics by itself;
SQLite leaves it to the application (https://sqlite.org/lang_analyze.html).

`PlannerStats` runs `ANALYZE` (bounded by `PRAGMA analysis_limit`, so it samples and
takes milliseconds even at millions of rows) once at start-up when the database holds
data, and again in a background thread whenever this process's committed writes have
doubled since the last run: 20, 40, 80, ... transactions. ANALYZE takes the write
lock briefly (the caller passes the lock writers queue on); readers in WAL mode go on.

SQLite loads the statistics into a connection when it opens the schema and does not
reload them when another connection runs ANALYZE. So every connection, when taken for
use, runs `ANALYZE sqlite_schema` (which only reloads) if statistics were gathered since
it last loaded them, or if that was more than RELOAD_SECONDS ago (another process -
a second worker - may have gathered them).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from sqlalchemy import Engine

log = logging.getLogger("fhir_server.storage")

FIRST_RUN_AFTER = 20  # committed write transactions before the first ANALYZE of a new database
ANALYSIS_LIMIT = 1000  # index rows SQLite samples per index (https://sqlite.org/pragma.html#pragma_analysis_limit)
RELOAD_SECONDS = 30.0  # a connection reloads statistics at least this often (another process's ANALYZE)


class PlannerStats:
    def __init__(self, engine: Engine, write_lock: threading.RLock, first_after: int = FIRST_RUN_AFTER):
        self.engine = engine
        self.write_lock = write_lock
        self.writes = 0
        self.next_at = first_after
        self.runs = 0
        self.generation = 0  # bumped by each ANALYZE of this process
        self._guard = threading.Lock()
        self._running = False

    def refresh(self, dbapi_conn, info: dict) -> None:
        """Reload the statistics into one sqlite3 connection when they may be stale; `info`
        is a dict that lives as long as the connection (the pool record's info)."""
        now = time.monotonic()
        loaded = info.get("fhir_planner_stats")
        if loaded is not None and loaded[0] == self.generation and now - loaded[1] < RELOAD_SECONDS:
            return
        # (ANALYZE sqlite_schema would create an empty sqlite_stat1 where none is: a write)
        if dbapi_conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            dbapi_conn.execute("ANALYZE sqlite_schema")
        info["fhir_planner_stats"] = (self.generation, now)

    def watch(self, engine: Engine) -> None:
        """Refresh each connection of `engine`'s pool when it is checked out."""
        from sqlalchemy import event

        event.listen(engine, "checkout", lambda dbapi_conn, record, _proxy: self.refresh(dbapi_conn, record.info))

    def note_write(self) -> None:
        """Count one committed write transaction; start an ANALYZE when the count doubled."""
        self.writes += 1
        if self.writes >= self.next_at and not self._running:
            self._start(lambda: True, advance=True)

    def at_start_up(self) -> None:
        """Analyze in the background if the database holds resources but no statistics."""
        self._start(self._missing, advance=False)

    def _start(self, when: Callable[[], bool], advance: bool) -> None:
        with self._guard:
            if self._running:
                return
            self._running = True
            if advance:
                self.next_at = self.writes * 2
        threading.Thread(target=self._run, args=(when,), name="fhir-sqlite-analyze", daemon=True).start()

    def _missing(self) -> bool:
        with self.engine.connect() as conn:
            has_rows = conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM resources)").scalar()
            has_stats = conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").scalar() and \
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'resources'").scalar()
        return bool(has_rows) and not has_stats

    def _run(self, when: Callable[[], bool]) -> None:
        try:
            if when():
                self.analyze()
        except Exception:  # noqa: BLE001 - statistics are an optimisation; the next doubling tries again
            log.warning("ANALYZE of the SQLite database failed", exc_info=True)
        finally:
            self._running = False

    def analyze(self) -> None:
        """Refresh sqlite_stat1 now (sampled; see ANALYSIS_LIMIT)."""
        with self.write_lock, self.engine.connect() as conn:
            conn.info["write"] = True  # BEGIN IMMEDIATE: ANALYZE writes sqlite_stat1
            try:
                conn.exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
            finally:
                conn.info["write"] = False
        self.generation += 1
        self.runs += 1
