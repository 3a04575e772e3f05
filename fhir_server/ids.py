"""Identifiers for the hot paths (resource and Bundle ids, request ids, AuditEvent ids).

`str(uuid.uuid4())` builds a UUID object through Python-level validation; at thousands of
requests a second that showed as several percent of a read's CPU (each protected read
makes a request id and an AuditEvent id). These give the same text from `os.urandom`.
"""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """A random version-4 UUID as text (RFC 4122 variant), as str(uuid.uuid4()) gives it:
    a valid FHIR id (http://hl7.org/fhir/R4/datatypes.html#id)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def new_hex() -> str:
    """128 random bits as 32 lower-case hex digits (as uuid.uuid4().hex, without the version bits)."""
    return os.urandom(16).hex()


def new_time_ordered_id() -> str:
    """A version-7 UUID as text (RFC 9562 section 5.7: 48 bits of Unix milliseconds, then
    random bits), a valid FHIR id. Ids made later sort later, so an index of them grows at
    its right edge instead of touching a random page per insert (the access log's events)."""
    b = bytearray((time.time_ns() // 1_000_000 & 0xFFFFFFFFFFFF).to_bytes(6, "big") + os.urandom(10))
    b[6] = 0x70 | (b[6] & 0x0F)  # version 7
    b[8] = 0x80 | (b[8] & 0x3F)  # variant 10
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_time_ordered_hex() -> str:
    """`new_time_ordered_id` as 32 hex digits (request ids: the access log indexes them)."""
    return new_time_ordered_id().replace("-", "")
