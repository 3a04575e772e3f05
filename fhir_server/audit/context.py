"""What the request being served has done, as far as the access log needs to know.

The audit middleware (`audit.middleware`) opens one `AuditRecord` per audited HTTP
request and puts it in a context variable; the layers inside note on it what they
returned (`note_returned`, called by the search engine with every match and include)
and whether its writes were audited in their own transaction (`audit.writes`).
Context variables follow the request into the worker thread that runs it (anyio
copies the context), so no layer needs an extra argument.

Everything here is cheap: a request that nothing notes pays one `ContextVar.get`.
"""

from __future__ import annotations

from contextvars import ContextVar

_current: ContextVar["AuditRecord | None"] = ContextVar("fhir_audit_record", default=None)


class AuditRecord:
    """One audited request. `state` is the ASGI scope's state dict: the principal and
    request id land there (auth and request-id middleware) after the record opens.
    A plain slotted class: one is made per request, and a dataclass with default
    factories cost several times as much to create."""

    __slots__ = ("state", "client_address", "acting_for", "server_base", "returned", "patients", "known", "writes_audited")

    def __init__(self, state: dict, client_address: str = "", acting_for: str | None = None, server_base: str = ""):
        self.state = state
        self.client_address = client_address
        self.acting_for = acting_for  # X-Acting-For: Patient/ID as the client sent it
        self.server_base = server_base  # the base URL the request was sent to (the Destination agent's network)
        self.returned: list[tuple[str, str]] = []  # (type, id) of each resource returned
        self.patients: list[str] = []  # Patient ids of AuditEvents returned (the log read)
        self.known: dict | None = None  # (type, id) -> its Patient ids, where the request worked them out already
        self.writes_audited = 0  # AuditEvents already written inside the request's write transaction(s)

    @property
    def principal(self):
        return self.state.get("principal")

    @property
    def request_id(self) -> str:
        return self.state.get("request_id", "")


def current() -> AuditRecord | None:
    """The record of the request being served, or None (in-process work, audit off)."""
    return _current.get()


def open_record(record: AuditRecord):
    """Make `record` current; returns the token for `close_record`."""
    return _current.set(record)


def close_record(token) -> None:
    _current.reset(token)


def note_returned(pairs) -> None:
    """Note resources a read or search hands to the client: an iterable of (type, id)."""
    record = _current.get()
    if record is not None:
        record.returned.extend(pairs)


def note_patients_of(res_type: str, res_id: str, patient_ids: list[str]) -> None:
    """Note the Patient ids a resource returned belongs to, as the request found them from the
    resource itself (search.membership.patients_of: the same answer as the writer's lookup)."""
    record = _current.get()
    if record is not None:
        if record.known is None:
            record.known = {}
        record.known[(res_type, res_id)] = patient_ids


def note_patients(ids) -> None:
    """Note the Patient ids whose AuditEvents a read of the log hands to the client."""
    record = _current.get()
    if record is not None:
        record.patients.extend(ids)


def principal_fields(principal) -> dict:
    """The AuditFacts fields that say who acted, from a security Principal (or None)."""
    if principal is None or not getattr(principal, "authenticated", False):
        return {}
    return {
        "subject": principal.subject,
        "client_id": principal.client_id,
        "fhir_user": principal.fhir_user,
        "token_id": (principal.claims or {}).get("jti"),
        "context_patient": principal.patient,
    }
