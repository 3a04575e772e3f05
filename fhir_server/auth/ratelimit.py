"""Per-client rate limiting with the `limits` library (moving window, in memory).

`FHIR_SERVER_RATE_LIMIT` takes the `limits` notation ("600/minute", "20/second;1000/hour");
empty turns it off. The key is the token's client_id (else its subject), so one busy
client cannot starve the others. Over the limit: 429 with Retry-After (seconds).
In-memory state is per process; several workers each count their own share.
"""

from __future__ import annotations

import math
import time

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class ClientRateLimiter:
    def __init__(self, spec: str):
        self.items = parse_many(spec)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, client: str) -> int | None:
        """Count one request; None when allowed, else the seconds to wait."""
        for item in self.items:
            if not self.limiter.hit(item, "client", client):
                reset, _remaining = self.limiter.get_window_stats(item, "client", client)
                return max(1, math.ceil(reset - time.time()))
        return None


def make_limiter(settings) -> ClientRateLimiter | None:
    spec = (settings.rate_limit or "").strip()
    return ClientRateLimiter(spec) if spec else None
