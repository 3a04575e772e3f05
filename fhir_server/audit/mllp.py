"""HL7 v2 over MLLP in the access log: one Import event per message, and its writes.

The MLLP listener has no HTTP request and no token: the sending system is known by its
address. `audited(handler, writer)` wraps the listener's message handler so that each
message opens an audit record for an in-process principal `mllp:<host:port>` (the
resources it changes get their in-transaction events, `audit.writes`) and leaves one
DCM 110107 Import event whose outcome follows the ACK: AA/CA success, AE/CE/AR/CR failure.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ..security.authz import Principal
from .balp import AuditFacts
from .context import AuditRecord, close_record, open_record

_MSA = re.compile(rb"MSA\|([A-Z]{2})")
_STATUS = {b"AA": 200, b"CA": 200, b"AE": 422, b"CE": 422, b"AR": 400, b"CR": 400}


def audited(handler, writer):
    def handle(data: bytes, peer: object):
        sender = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        principal = Principal.internal(f"mllp:{sender}")
        record = AuditRecord(state={"principal": principal}, client_address=sender.rsplit(":", 1)[0])
        token = open_record(record)
        replies = None
        try:
            replies = handler(data, peer)
            return replies
        finally:
            close_record(token)
            first = (replies[0] if isinstance(replies, list) and replies else replies) or b""
            m = _MSA.search(first if isinstance(first, bytes) else str(first).encode())
            code = m.group(1) if m else b""
            writer.submit(AuditFacts(
                kind="hl7v2", subtype="create", action="C", status=_STATUS.get(code, 500 if replies is None else 200),
                recorded=datetime.now(timezone.utc), detail=f"MLLP, ACK {code.decode() or 'none'}",
                subject=principal.subject, client_address=record.client_address))

    return handle
