"""Random identifiers for the hot paths (resource and Bundle ids, request ids).

`str(uuid.uuid4())` builds a UUID object through Python-level validation; at thousands of
requests a second that showed as several percent of a read's CPU (each protected read
makes a request id and an AuditEvent id). These give the same text from `os.urandom`.
"""

from __future__ import annotations

import os


def new_id() -> str:
    """A random version-4 UUID as text (RFC 4122 variant), as str(uuid.uuid4()) gives it:
    a valid FHIR id (http://hl7.org/fhir/R4/datatypes.html#id)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def new_hex() -> str:
    """128 random bits as 32 lower-case hex digits (as uuid.uuid4().hex, without the version bits)."""
    return os.urandom(16).hex()
