"""The buffer behind the access log: read events queued in memory, written in batches.

A read must not wait for its AuditEvent to be committed, so `AuditWriter.submit` only
appends to an in-process queue (a deque append: no lock, no I/O). A daemon thread writes
what has gathered every `flush_seconds` (0.2 s by default) in one transaction: the patients
the events' resources belong to are looked up in one query, and each event becomes one
compact row of the log (`audit.log`), searchable from its commit on. `close()` (the app's
shutdown) and `flush()` write the rest at once. What a crash of the process (kill -9,
power loss) can lose is therefore the events of the last flush interval; writes are not
exposed to that, their events commit with them (`audit.writes`).

If the database refuses a batch (it is down, say), the batch goes back to the front of
the queue and is retried at the next tick; the queue keeps at most `max_pending` events,
dropping the oldest beyond that (logged), so an outage cannot exhaust memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import orjson

from ..errors import FhirError
from . import log as audit_log
from .balp import AuditFacts, facts_row
from .store import patients_of_stored

log = logging.getLogger("fhir_server.audit")


class AuditWriter:
    def __init__(self, db, flush_seconds: float = 0.2, max_batch: int | None = None, max_pending: int = 200_000):
        self.db = db
        self.flush_seconds = flush_seconds
        sqlite = getattr(db, "dialect", "") == "sqlite"
        # SQLite has one write lock for every writer: short batches, and a pause between them
        self.max_batch = max_batch or (500 if sqlite else 1000)
        self.pause_between_batches = 0.002 if sqlite else 0.0
        self.max_pending = max_pending
        self._queue: deque[bytes] = deque()  # audit.log.encode_row: facts rows and lookups as JSON
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.dropped = 0
        self.written = 0

    # ------------------------------------------------------------ producer side

    def submit(self, facts: AuditFacts, lookup: list[tuple[str, str]] | None = None) -> None:
        """Queue one event (thread-safe, never blocks on I/O). `lookup`: stored (type, id)
        whose patients the event names, looked up when it is written."""
        self.submit_encoded(audit_log.encode_row(facts_row(facts), lookup or ()))

    def submit_row(self, row: tuple, lookup=()) -> None:
        """Queue one event given as a facts row (balp.facts_row; the audit middleware's)."""
        self.submit_encoded(audit_log.encode_row(row, lookup))

    def submit_encoded(self, raw: bytes) -> None:
        """Queue one event encoded by `audit.log.encode_row` (the process writer's child)."""
        self._queue.append(raw)
        if self._thread is None:
            self._start()
        if len(self._queue) > self.max_pending:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("audit queue full (database unreachable?): %d events dropped so far", self.dropped)

    def pending(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------ writer side

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fhir-audit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the database is away: the batch is back in the queue; try next tick
                log.warning("audit flush failed; %d events wait for the next attempt", len(self._queue), exc_info=True)

    def flush(self) -> int:
        """Write everything queued now (in batches of `max_batch`); returns how many events.
        An empty queue costs no I/O (an exit handler may run after the database is gone)."""
        total = 0
        with self._flush_lock:
            while self._queue:
                batch: list[bytes] = []
                while self._queue and len(batch) < self.max_batch:
                    batch.append(self._queue.popleft())
                try:
                    self._write(batch)
                except FhirError as exc:
                    if exc.status != 400:
                        self._queue.extendleft(reversed(batch))
                        raise
                    # a batch the database cannot store would block the log for good: store
                    # the events one by one and drop (with an error line) only those refused
                    self._write_each(batch)
                except Exception:
                    self._queue.extendleft(reversed(batch))
                    raise
                total += len(batch)
                if self._queue and self.pause_between_batches:
                    # a backlog (a burst of reads) would otherwise hold SQLite's one write lock batch
                    # after batch: Python's locks are not fair, so step aside for waiting writes
                    time.sleep(self.pause_between_batches)
        self.written += total
        return total

    def _write_each(self, batch: list[bytes]) -> None:
        for item in batch:
            try:
                self._write([item])
            except FhirError as exc:
                self.dropped += 1
                log.error("audit event dropped, the database cannot store it: %s", exc.issues[0].diagnostics if exc.issues else exc)

    def _write(self, batch: list[bytes]) -> None:
        with self.db.write() as conn:
            audit_log.insert(conn, entries(conn, batch))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left (graceful shutdown)."""
        self._stop.set()
        self._wake.set()
        with self._start_lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                thread.join(timeout)
            self._stop.clear()  # a later submit (the app started again) starts a new thread
        try:
            self.flush()
        except Exception:
            log.exception("audit events could not be written at shutdown: %d lost", len(self._queue))


def entries(conn, batch: list[bytes]) -> list[audit_log.Entry]:
    """The log rows of `batch` (`audit.log.encode_row`d events), each naming the patients its
    looked-up resources belong to (one indexed query for the whole batch)."""
    decoded = [audit_log.decode_row(raw) for raw in batch]
    lookups = [tuple(p) for _, lookup in decoded for p in lookup]
    found = patients_of_stored(conn, lookups) if lookups else {}
    out = []
    for raw, (f, lookup) in zip(batch, decoded):
        names = f["patients"]
        for pair in lookup:
            for pid in found.get(tuple(pair), ()):
                if pid not in names:
                    names.append(pid)
        # nothing looked up (a read whose patients the request found): the queued bytes are the document
        out.append(audit_log.entry_of_fields(f, doc=None if lookup else raw))
    return out
