"""The access log's batch writer in a process of its own (`FHIR_SERVER_AUDIT_WRITER=process`).

Writing a read's event (the patients' lookup, its log rows: audit.log) costs a fraction of
serving the read, but in the server's process that work holds the GIL the event loop needs,
and it adds up under load. Here the server
process only appends the facts, encoded as JSON bytes (audit.log.encode_row), to a deque; a sender
thread sends what has gathered (one message per batch) into a pipe, and a child process (spawned, not forked: the server has
threads and an event loop) runs the same `AuditWriter` on its own core.

Same contract as `AuditWriter`: `submit` never blocks on I/O; `flush()` returns once every
event submitted before it is committed; `close()` writes the rest and stops the child. What a
crash can lose is unchanged: the events of the last flush interval (in the pipe or the
child's queue). The child exits when the server process is gone; a child that dies is
replaced at the next event.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import threading
from collections import deque

from . import log as audit_log
from .balp import AuditFacts, facts_row

log = logging.getLogger("fhir_server.audit")

SEND_EVERY = 0.05  # seconds between batches handed to the child
REPLY_TIMEOUT = 60.0  # seconds flush() and close() wait for the child


class ProcessAuditWriter:
    def __init__(self, database_url: str, flush_seconds: float = 0.2, max_pending: int = 200_000):
        self.database_url = database_url
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self._queue: deque[bytes] = deque()  # audit.log.encode_row: facts rows and lookups as JSON
        self._lock = threading.Lock()  # one sender at a time on the pipe (sender thread, flush, close)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._child = None
        self._pipe = None
        self._sender: threading.Thread | None = None
        self.dropped = 0

    # ------------------------------------------------------------ producer side

    def submit(self, facts: AuditFacts, lookup: list[tuple[str, str]] | None = None) -> None:
        """Queue one event (thread-safe, never blocks on I/O)."""
        self.submit_row(facts_row(facts), lookup or ())

    def submit_row(self, row: tuple, lookup=()) -> None:
        """Queue one event given as a facts row (balp.facts_row; the audit middleware's)."""
        self._queue.append(audit_log.encode_row(row, lookup))
        if self._sender is None:
            self._start()
        if len(self._queue) > self.max_pending:
            self._queue.popleft()
            self.dropped += 1

    def pending(self) -> int:
        return len(self._queue)

    def flush(self) -> int:
        """Hand everything queued to the child and wait until it is committed; returns how many."""
        with self._lock:
            if self._pipe is None:
                return 0
            sent = self._send_queued()
            self._pipe.send(("flush", None))
            self._reply("flush")
            return sent

    def close(self, timeout: float = REPLY_TIMEOUT) -> None:
        """Write what is left, stop the sender and the child (graceful shutdown)."""
        self._stop.set()
        self._wake.set()
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.join(timeout)
        with self._lock:
            if self._pipe is not None:
                try:
                    self._send_queued()
                    self._pipe.send(("stop", None))
                    self._reply("stop")
                except (OSError, EOFError, TimeoutError):
                    log.exception("the access-log writer process did not finish: %d events may be lost", len(self._queue))
                self._pipe.close()
                self._pipe = None
            if self._child is not None:
                self._child.join(timeout)
                self._child = None
        self._stop.clear()  # a later submit (the app started again) starts a new child

    # ------------------------------------------------------------ internals

    def _start(self) -> None:
        with self._lock:
            if self._sender is not None:
                return
            ctx = multiprocessing.get_context("spawn")
            parent_end, child_end = ctx.Pipe()
            self._child = ctx.Process(target=_child_main, name="fhir-audit-writer", daemon=True,
                                      args=(child_end, self.database_url, self.flush_seconds, os.getpid()))
            self._child.start()
            child_end.close()
            self._pipe = parent_end
            self._sender = threading.Thread(target=self._run, name="fhir-audit-sender", daemon=True)
            self._sender.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(SEND_EVERY)
            if not self._queue:
                continue
            with self._lock:
                if self._pipe is None:
                    return
                try:
                    self._send_queued()
                except (OSError, EOFError):
                    # the child died (killed, out of memory): the next submit starts a new one;
                    # the batch that was being sent is lost, later events wait in the queue
                    log.exception("the access-log writer process is gone; %d events wait for a new one", len(self._queue))
                    self._pipe.close()
                    self._pipe = self._child = self._sender = None
                    return

    def _send_queued(self) -> int:
        batch = []
        while self._queue:
            batch.append(self._queue.popleft())
        if batch:
            self._pipe.send_bytes(pickle.dumps(("events", batch), protocol=pickle.HIGHEST_PROTOCOL))
        return len(batch)

    def _reply(self, what: str) -> None:
        if not self._pipe.poll(REPLY_TIMEOUT):
            raise TimeoutError(f"the access-log writer process did not answer {what!r}")
        kind, detail = self._pipe.recv()
        if kind == "error":
            raise RuntimeError(f"the access-log writer process failed to {what}: {detail}")


def _child_main(pipe, database_url: str, flush_seconds: float, parent_pid: int) -> None:
    """The writer process: a thread `AuditWriter` fed from the pipe."""
    from ..storage.database import Database
    from .writer import AuditWriter

    db = Database(database_url)
    writer = AuditWriter(db, flush_seconds=flush_seconds)
    _settle()
    try:
        while True:
            if not pipe.poll(1.0):
                if os.getppid() != parent_pid:
                    break  # the server process died: write what we hold and go
                continue
            try:
                kind, payload = pickle.loads(pipe.recv_bytes())
            except (EOFError, OSError):
                break
            if kind == "events":
                for raw in payload:
                    writer.submit_encoded(raw)
            elif kind in ("flush", "stop"):
                try:
                    writer.flush()
                    pipe.send(("ok", None))
                except Exception as exc:  # noqa: BLE001 - reported to the server process
                    pipe.send(("error", str(exc)[:500]))
                if kind == "stop":
                    break
    finally:
        writer.close()
        db.dispose()


def _settle() -> None:
    """Load what building AuditEvents needs (the AuditEvent search parameters, the indexer),
    then move everything alive now out of the cyclic garbage collector's view (`gc.freeze`):
    its full collections, a third of the CPU of indexing a batch, then walk only the batch."""
    import gc

    from ..search import indexer, registry

    registry.search_parameters_for("AuditEvent")
    indexer._plan("AuditEvent")
    gc.collect()
    gc.freeze()
