"""The FHIR base URL as clients see it, and whom to believe about it.

Links the server writes (`Location`, `Bundle.link`, `fullUrl`) start with the
base URL. Behind a reverse proxy the request's own host and scheme are the
proxy's, and the proxy says what the client used in `X-Forwarded-Proto`,
`X-Forwarded-Host` and `X-Forwarded-Prefix`. Those headers are believed only
from a trusted proxy (`FHIR_SERVER_TRUSTED_PROXIES`, addresses or networks;
default: loopback only); from anyone else they are ignored, so that a client
cannot make the server answer `Location: https://evil.example/...`. A
configured `FHIR_SERVER_PUBLIC_BASE_URL` wins over everything.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from starlette.requests import Request


def _networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part:
            out.append(ipaddress.ip_network(part, strict=False))  # ValueError names a bad setting at start-up
    return out


@dataclass
class ForwardingPolicy:
    """`public_base_url` (may be empty) and the trusted proxy networks."""

    public_base_url: str = ""
    trusted_proxies: str = "127.0.0.1,::1"
    _nets: list = field(init=False, repr=False)
    _trusted: dict = field(init=False, repr=False, default_factory=dict)  # peer address -> trusted

    def __post_init__(self) -> None:
        self._nets = _networks(self.trusted_proxies)
        self.public_base_url = self.public_base_url.rstrip("/")

    def trusts(self, peer: str | None) -> bool:
        if not peer:
            return False
        known = self._trusted.get(peer)
        if known is None:  # parsing the address and walking the networks cost more than the rest
            try:
                addr = ipaddress.ip_address(peer)
            except ValueError:
                known = False  # a Unix socket or a test client: not a known proxy
            else:
                known = any(addr in net for net in self._nets)
            if len(self._trusted) >= 4096:
                self._trusted.clear()
            self._trusted[peer] = known
        return known

    def base_url(self, request: Request, base_path: str) -> str:
        if self.public_base_url:
            return self.public_base_url
        scope = request.scope  # read from the scope: Starlette's request.url is rebuilt per request
        headers = request.headers
        scheme = scope.get("scheme") or request.url.scheme
        proto = scheme
        host = headers.get("host") or request.url.netloc
        prefix = ""
        client = scope.get("client")
        if self.trusts(client[0] if client else None):
            proto = headers.get("x-forwarded-proto", proto).split(",")[0].strip() or proto
            host = (headers.get("x-forwarded-host") or host).split(",")[0].strip() or host
            prefix = headers.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
        if proto not in ("http", "https"):
            proto = scheme
        return f"{proto}://{host}{prefix}{base_path}"


DEFAULT_POLICY = ForwardingPolicy()
