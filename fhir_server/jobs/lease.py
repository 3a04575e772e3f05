"""Keep a lease alive while work runs, so that no other process takes it over.

Every background worker in the server (the job queue, the subscription outbox)
owns its work through a lease: a row says who works on it and until when, and
any process may take the work over once that time has passed. That is what
makes a crashed process's work continue elsewhere. It is only safe if a process
that is alive and still working never lets its lease run out: a job that ran
longer than its lease without a checkpoint (a slow export page, an SMTP server
that takes its time, a rest-hook endpoint answering slowly) would otherwise be
claimed and run a second time by another process while the first one is still
at it.

`LeaseKeeper` renews a lease from a thread of its own every `interval` seconds
(a third of the lease by default) for as long as the `with` block runs. When a
renewal finds the lease gone (the job was cancelled, or the process stalled so
long that another one took over), `lost` becomes True and stays so; the work
should stop at its next step and write nothing more.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("fhir_server.jobs")


class LeaseKeeper:
    """`with LeaseKeeper(renew, interval):` calls `renew()` every `interval` seconds.

    renew     returns True while the lease is still ours (it extends it), False
              once it is not; an exception (database away for a moment) is
              logged and the next renewal tried as usual.
    interval  seconds between renewals; choose at most a third of the lease,
              so two renewals can fail before the lease runs out.
    """

    def __init__(self, renew: Callable[[], bool], interval: float, name: str = "lease-keeper"):
        self._renew = renew
        self.interval = max(0.05, float(interval))
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def lost(self) -> bool:
        """True once a renewal found that the lease is no longer ours."""
        return self._lost.is_set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self._renew():
                    self._lost.set()
                    return
            except Exception:  # keep trying: the lease has two more intervals to run
                log.exception("lease renewal failed")

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
