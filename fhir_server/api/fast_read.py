"""`GET [base]/Type/id` answered in front of the router.

Reading one resource by id is the request a FHIR server serves most. Through
FastAPI's routing, dependency solving and Request objects it costs several
times the database lookup itself. This ASGI layer answers the plain form (no
query string, no conditional headers, a JSON Accept, a current version) with
one awaited lookup and the stored bytes. Everything else, including every
error, goes on to the app, which answers it as before; a test holds the two
paths to the same bytes and headers. Authorisation is the same seam
(`interactions.check_read`) every other read passes. A token restricted to Patient
compartments (a portal's `patient/` token) is answered here too when the resource is
in one of them, decided from its compartment parameters' rows in the reference index,
read in the same statement as the resource (the rule the database's criteria apply:
`query.compartment_condition`); anything else restricted goes to the app.
"""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request

from ..audit.context import note_patients_of
from ..errors import FhirError
from ..rest import interactions as ix
from ..rest.context import RequestContext
from ..search.registry import patient_compartment
from ..security.authz import ANONYMOUS, visibility
from ..security.versions import patient_compartments
from ..storage.repository import StoredResource
from . import http

# Headers whose presence asks for more than the plain read (the app handles them).
_DEFER_HEADERS = frozenset((b"if-none-match", b"if-modified-since", b"if-match", b"prefer"))


class Reader(Protocol):
    async def read_current(self, res_type: str, res_id: str) -> StoredResource | None: ...

    async def read_with_patients(self, res_type: str, res_id: str, params: tuple[str, ...]) -> tuple[StoredResource | None, list[str]]: ...


# The lifespan state key of the server's Reader (None or absent: no fast path).
FAST_READER = "fast_reader"


class FastReads:
    """ASGI middleware in front of the FastAPI router."""

    def __init__(self, app, base_path: str) -> None:
        self.app = app
        self.prefix = base_path.rstrip("/") + "/"

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            reader = (scope.get("state") or {}).get(FAST_READER)
            if reader is not None and await self._try(reader, scope, receive, send):
                return
        await self.app(scope, receive, send)

    async def _try(self, reader: Reader, scope, receive, send) -> bool:
        """Answer the request and return True, or return False to let the app answer."""
        path: str = scope["path"]
        if not path.startswith(self.prefix):
            return False
        res_type, sep, res_id = path[len(self.prefix):].partition("/")
        # Binary reads are content negotiation and streaming (api/binary.py); AuditEvents are
        # read from the access log (audit.log_rest)
        if not sep or not ix.ID_RE.match(res_id) or not res_type[:1].isupper() or res_type in ("Binary", "AuditEvent"):
            return False
        accept = ""
        for k, v in scope["headers"]:
            if k in _DEFER_HEADERS:
                return False
            if k == b"accept" and not accept:  # the first, as Starlette's headers.get()
                accept = v.decode("latin-1")
        try:
            media = http.negotiate(None, accept)
            state = scope.get("state") or {}
            principal = state.get("principal") or ANONYMOUS
            ctx = RequestContext(base_url="", principal=principal, request_id=state.get("request_id", ""))
            ix.check_read(ctx, res_type, res_id)
            compartments = _compartments_only(principal, res_type)
            if compartments is False:
                return False  # restricted by search criteria: the app's read asks the database
        except FhirError:
            return False
        try:
            if compartments is None:
                stored = await reader.read_current(res_type, res_id)
            else:
                stored, found = await reader.read_with_patients(res_type, res_id, _compartment_params(res_type))
        except FhirError as exc:  # the database is unreachable: 503, answered here
            await http.error_response(Request(scope, receive), exc)(scope, receive, send)
            return True
        if stored is None or stored.deleted or stored.content is None:
            return False
        if compartments is not None:
            if res_type == "Patient":  # a Patient is in its own compartment
                found = [res_id, *(p for p in found if p != res_id)]
            note_patients_of(res_type, res_id, found)  # the access log need not look them up again
            if not any(p in compartments for p in found):
                return False  # not visibly within reach: the app answers (404, as for an unknown id)
        await http.send_fhir_body(send, stored.content, media, [
            (b"etag", f'W/"{stored.version_id}"'.encode()),
            (b"last-modified", ix.http_date(stored.last_updated).encode()),
        ])
        return True


def _compartments_only(principal, res_type: str):
    """None: the principal sees every resource of the type; a set of Patient ids: it sees
    those Patients' compartments only (decided from the reference index); False: other
    criteria apply (search parameters, other compartments), which only the database answers."""
    if principal.unrestricted:
        return None
    vis = visibility(principal, res_type, "r")
    if vis is None:
        return None
    if any(c.params or c.exclude or c.conditions for c in vis):
        return False  # search criteria (a Consent's deny, a granular scope): only the database decides
    return patient_compartments(vis) or False


def _compartment_params(res_type: str) -> tuple[str, ...]:
    """The type's Patient-compartment parameters (R4 CompartmentDefinition/patient)."""
    return patient_compartment().get(res_type, ())
