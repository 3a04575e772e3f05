"""What every interaction knows about the request it serves, free of HTTP types."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Issue
from ..ids import new_time_ordered_hex
from ..security.authz import Principal, visibility


@dataclass
class RequestContext:
    """`principal` defaults to the server itself (in-process callers: loader, HL7 v2,
    jobs); the HTTP edge always sets the request's own (anonymous until a token is verified)."""

    base_url: str  # e.g. http://127.0.0.1:8080/fhir, honouring X-Forwarded-*
    principal: Principal = field(default_factory=Principal.internal)
    request_id: str = field(default_factory=new_time_ordered_hex)
    prefer_return: str | None = None  # minimal | representation | OperationOutcome
    lenient: bool = False  # Prefer: handling=lenient

    def access(self):
        """The caller's visibility per (type, permission) for the search engine; None if unrestricted."""
        if self.principal.unrestricted:
            return None
        principal = self.principal
        return lambda res_type, permission: visibility(principal, res_type, permission)


@dataclass
class Outcome:
    """The result of one interaction, before it becomes an HTTP response or a Bundle entry."""

    status: int
    body: bytes | None = None  # JSON
    headers: dict[str, str] = field(default_factory=dict)
    res_type: str | None = None
    res_id: str | None = None
    version_id: int | None = None
    last_modified: str | None = None  # HTTP date
    last_updated: str | None = None  # FHIR instant
    warnings: list[Issue] = field(default_factory=list)

    @property
    def etag(self) -> str | None:
        return f'W/"{self.version_id}"' if self.version_id is not None else None

    @property
    def location(self) -> str | None:
        if self.res_type and self.res_id and self.version_id is not None:
            return f"{self.res_type}/{self.res_id}/_history/{self.version_id}"
        return None
