"""References written against this server's own base, recognised as local.

http://hl7.org/fhir/R4/references.html#literal: an absolute reference whose base is
the server's own (`http://HOST:PORT/fhir/Patient/X`) names the same resource as the
relative `Patient/X`. The index therefore stores such a reference as type and id
(the stored resource keeps the text as sent), so that `subject=X`,
`subject=Patient/X`, `subject=<absolute>`, chains, compartments,
`_include`/`_revinclude`, `$everything` and `$export` all agree.

The server's bases are: the base of the request being served (which honours
X-Forwarded-Proto/-Host/-Prefix, see api/http.py), and every base configured in
`FHIR_SERVER_BASE_URL_ALIASES` (comma-separated absolute base URLs, e.g. the public
name behind a proxy, or an old host name). Comparison is on scheme, host and port
case-insensitively (default ports elided) and on the path exactly.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator
from urllib.parse import urlsplit

_aliases: tuple[str, ...] = ()
_request_base: ContextVar[str | None] = ContextVar("fhir_request_base", default=None)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _canonical(base: str) -> str:
    """`HTTP://Host:80/fhir/` -> `http://host/fhir` (scheme/host lower-cased, default port dropped)."""
    parts = urlsplit(base.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port and str(parts.port) != _DEFAULT_PORTS.get(scheme) else ""
    return f"{scheme}://{host}{port}{parts.path.rstrip('/')}"


def configure(aliases: str | list[str] | tuple[str, ...]) -> None:
    """Set the alias bases (comma-separated text or a list of absolute URLs)."""
    global _aliases
    items = aliases.split(",") if isinstance(aliases, str) else list(aliases)
    _aliases = tuple(_canonical(a) for a in items if a.strip() and "://" in a)


def setup(settings) -> None:  # plugin hook (fhir_server.plugins)
    configure(getattr(settings, "base_url_aliases", "") or "")


@contextmanager
def serving(base_url: str | None) -> Iterator[None]:
    """Within the block, `base_url` (the request's base) counts as this server's base."""
    token = _request_base.set(_canonical(base_url) if base_url and "://" in base_url else None)
    try:
        yield
    finally:
        _request_base.reset(token)


def bases(extra: str | None = None) -> tuple[str, ...]:
    """This server's bases in canonical form: the request's, `extra`, the aliases."""
    out = list(_aliases)
    current = _request_base.get()
    if current:
        out.append(current)
    if extra and "://" in extra:
        out.append(_canonical(extra))
    return tuple(out)


def local_form(ref: str, extra: str | None = None) -> str | None:
    """`http://host/fhir/Patient/X[/_history/n]` -> `Patient/X[/_history/n]` when the
    base is one of this server's; None for anything else (relative, foreign, urn)."""
    if "://" not in ref:
        return None
    known = bases(extra)
    if not known:
        return None
    try:
        parts = urlsplit(ref)
        canon = _canonical(f"{parts.scheme}://{parts.netloc}") + parts.path
    except ValueError:
        return None
    if parts.query or parts.fragment:
        return None
    for base in known:
        if canon.startswith(base + "/"):
            rest = canon[len(base) + 1:]
            return rest or None
    return None


__all__ = ["configure", "setup", "serving", "bases", "local_form"]
