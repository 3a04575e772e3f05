"""Size limits on what one request may store or produce.

- A single resource, as stored (compact JSON), may be at most
  `MAX_RESOURCE_BYTES` (`FHIR_SERVER_MAX_RESOURCE_BYTES`): 413 `too-costly`
  naming the resource type otherwise, checked where every write passes, so a
  transaction that holds one over-large resource writes nothing.
- The resources one response carries (a batch/transaction response, a search
  page) may add up to at most `MAX_RESPONSE_BYTES`
  (`FHIR_SERVER_MAX_RESPONSE_BYTES`), counted while the response is built, so
  a small Bundle of GETs cannot make the server build a response of gigabytes.
  A batch answers the entries past the limit with 413 each; a transaction or
  a search page answers 413 as a whole.

`configure(settings)` sets both from the settings when the app is built.
"""

from __future__ import annotations

from ..errors import FhirError

MAX_RESOURCE_BYTES = 8 * 1024 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def configure(settings) -> None:
    global MAX_RESOURCE_BYTES, MAX_RESPONSE_BYTES
    MAX_RESOURCE_BYTES = int(settings.max_resource_bytes)
    MAX_RESPONSE_BYTES = int(settings.max_response_bytes)


def check_resource_size(content: bytes, res_type: str) -> None:
    """413 when one resource, as it would be stored, exceeds the limit."""
    if len(content) > MAX_RESOURCE_BYTES:
        raise FhirError.of(
            413, "too-costly",
            f"The {res_type} is {len(content)} bytes as stored; this server accepts resources of at most {MAX_RESOURCE_BYTES} bytes",
            res_type,
        )


class ResponseBudget:
    """Counts the bytes of resources put in one response."""

    def __init__(self, limit: int | None = None):
        self.limit = MAX_RESPONSE_BYTES if limit is None else limit
        self.used = 0

    def fits(self, size: int) -> bool:
        """Take `size` bytes if they fit; False (and nothing taken) if not."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def take(self, size: int, what: str = "The response") -> None:
        """Take `size` bytes or raise 413."""
        if not self.fits(size):
            raise too_large(self.limit, what)


def too_large(limit: int, what: str = "The response") -> FhirError:
    return FhirError.of(413, "too-costly", f"{what} would exceed {limit} bytes, the most this server returns in one response; ask for less (a smaller _count, fewer entries)")
