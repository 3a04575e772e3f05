"""A Subscription resource read into what the engine needs, with its checks.

Follows R4 Subscription (http://hl7.org/fhir/R4/subscription.html) and the
Subscriptions R5 Backport IG's R4 profile
(http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition-backport-subscription.html):
a Subscription whose `criteria` is the canonical URL of a topic we serve is
topic-based; its filters are `_criteria` extensions `backport-filter-criteria`,
its payload content the `_payload` extension `backport-payload-content`, its
heartbeat/timeout/max-count extensions on `channel`.

Errors: FhirError 400 for a malformed or unsupported subscription, 422 for an
endpoint that the server's policy refuses (plain http outside the allow-list).
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qsl, urlsplit

from ..errors import FhirError

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
EXT_FILTER = BACKPORT + "backport-filter-criteria"
EXT_PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
EXT_HEARTBEAT = BACKPORT + "backport-heartbeat-period"
EXT_TIMEOUT = BACKPORT + "backport-timeout"
EXT_MAX_COUNT = BACKPORT + "backport-max-count"
PROFILE_SUBSCRIPTION = BACKPORT + "backport-subscription"

CHANNEL_TYPES = ("rest-hook", "websocket")
PAYLOAD_TYPES = ("application/fhir+json", "application/json")
CONTENT_CODES = ("empty", "id-only", "full-resource")
# What a client sees of a channel.header value: the name, never the secret.
MASK = "***"


@dataclass
class SubscriptionSpec:
    """Parsed delivery spec; `headers` are the real header lines (never returned)."""

    kind: str  # r4 | topic
    channel_type: str
    endpoint: str | None
    payload: str | None  # mime type or None (no payload)
    content: str  # empty | id-only | full-resource (topic-based); R4: full-resource when payload
    headers: list[str] = field(default_factory=list)
    criteria_type: str | None = None  # r4: the watched resource type
    criteria: list[tuple[str, str]] = field(default_factory=list)  # r4: the search parameters
    topic: str | None = None
    filters: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)  # (type, params)
    heartbeat_seconds: int | None = None
    timeout_seconds: int | None = None
    max_count: int = 1
    base_url: str = ""  # the FHIR base the subscriber used, for references in notifications
    end: str | None = None  # Subscription.end (instant, UTC ISO): no events after it
    sealed_headers: str | None = None  # as stored: the headers sealed (secrets.py); `headers` then empty

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SubscriptionSpec":
        data = dict(data)
        data["criteria"] = [tuple(p) for p in data.get("criteria") or []]
        data["filters"] = [(t, [tuple(p) for p in ps]) for t, ps in data.get("filters") or []]
        return cls(**data)


def _bad(message: str, expression: str, status: int = 400) -> FhirError:
    code = "business-rule" if status == 422 else "invalid"
    return FhirError.of(status, code, message, expression)


def parse_search(text: str, where: str) -> tuple[str, list[tuple[str, str]]]:
    """`Type?a=b&c=d` -> ("Type", [("a","b"),("c","d")]); 400 if it is not one."""
    from ..model.definitions import resource_types

    res_type, _, query = text.strip().partition("?")
    if not res_type or res_type not in resource_types():
        raise _bad(f"'{text}' is not a search on a resource type: expected Type?param=value", where)
    return res_type, parse_qsl(query, keep_blank_values=True)


def _ext(element: dict | None, url: str) -> list[dict]:
    return [e for e in (element or {}).get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _ext_int(element: dict | None, url: str, where: str) -> int | None:
    found = _ext(element, url)
    if not found:
        return None
    value = found[0].get("valueUnsignedInt", found[0].get("valuePositiveInt"))
    if not isinstance(value, int) or value < 0:
        raise _bad(f"Extension {url} needs a non-negative integer value", where)
    return value


def check_endpoint(endpoint: str, allowed_hosts: set[str], allow_loopback_http: bool) -> None:
    """rest-hook endpoints: https anywhere; http only to allow-listed hosts or
    (by default) loopback addresses. 400 for a malformed URL, 422 when refused."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(f"channel.endpoint '{endpoint}' must be an absolute http(s) URL", "Subscription.channel.endpoint")
    if parts.scheme == "https":
        return
    host = parts.hostname.lower()
    if host in allowed_hosts:
        return
    if allow_loopback_http and _is_loopback(host):
        return
    raise _bad(
        f"channel.endpoint '{parts.scheme}://{host}' is refused: rest-hook endpoints must use https "
        "(or be on the server's allow-list of hosts)",
        "Subscription.channel.endpoint",
        422,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_subscription(resource: dict, settings, topic_lookup) -> SubscriptionSpec:
    """Read and check a Subscription; `topic_lookup(url)` returns a topic or None.

    Raises FhirError 400 (invalid criteria, channel, payload, filter) or 422
    (endpoint refused by policy)."""
    channel = resource.get("channel") or {}
    ctype = channel.get("type")
    if ctype not in CHANNEL_TYPES:
        raise _bad(f"channel.type '{ctype}' is not supported: use one of {', '.join(CHANNEL_TYPES)}", "Subscription.channel.type")
    payload = channel.get("payload")
    if payload is not None and payload not in PAYLOAD_TYPES:
        raise _bad(f"channel.payload '{payload}' is not supported: leave it empty or use application/fhir+json", "Subscription.channel.payload")
    endpoint = channel.get("endpoint")
    if ctype == "rest-hook":
        if not endpoint:
            raise _bad("A rest-hook subscription needs channel.endpoint", "Subscription.channel.endpoint")
        allowed = {h.strip().lower() for h in (settings.subscription_allowed_hosts or "").split(",") if h.strip()}
        check_endpoint(endpoint, allowed, settings.subscription_allow_loopback_http)
    headers = channel.get("header") or []
    for h in headers:
        if not isinstance(h, str) or ":" not in h or not h.split(":", 1)[0].strip():
            raise _bad("Each channel.header must be 'Name: value'", "Subscription.channel.header")
        if "\r" in h or "\n" in h:
            raise _bad("A channel.header may not contain line breaks", "Subscription.channel.header")
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria.strip():
        raise _bad("Subscription.criteria is required", "Subscription.criteria")
    spec = SubscriptionSpec(kind="r4", channel_type=ctype, endpoint=endpoint, payload=payload,
                            content="full-resource" if payload else "empty", headers=list(headers))
    end = resource.get("end")
    if end is not None:
        from ..search.values import parse_date_range

        try:
            spec.end = parse_date_range(end)[1].isoformat()
        except Exception:
            raise _bad(f"Subscription.end '{end}' is not a valid instant", "Subscription.end") from None
    topic = topic_lookup(criteria.strip())
    if topic is not None:
        _read_topic_parts(spec, resource, channel, topic)
    else:
        if criteria.startswith(("http://", "https://")):
            raise _bad(f"Subscription.criteria '{criteria}' is not a topic this server offers", "Subscription.criteria")
        spec.criteria_type, spec.criteria = parse_search(criteria, "Subscription.criteria")
    return spec


def _read_topic_parts(spec: SubscriptionSpec, resource: dict, channel: dict, topic) -> None:
    spec.kind = "topic"
    spec.topic = topic.url
    content = _ext(channel.get("_payload"), EXT_PAYLOAD_CONTENT)
    spec.content = content[0].get("valueCode") if content else "empty"
    if spec.content not in CONTENT_CODES:
        raise _bad(f"Payload content '{spec.content}' is not one of {', '.join(CONTENT_CODES)}", "Subscription.channel.payload")
    if spec.content != "empty" and not spec.payload:
        spec.payload = "application/fhir+json"
    for ext in _ext(resource.get("_criteria"), EXT_FILTER):
        text = ext.get("valueString")
        if not isinstance(text, str):
            raise _bad("backport-filter-criteria needs a valueString", "Subscription.criteria")
        res_type, params = parse_search(text, "Subscription.criteria")
        topic.check_filter(res_type, params)
        spec.filters.append((res_type, params))
    spec.heartbeat_seconds = _ext_int(channel, EXT_HEARTBEAT, "Subscription.channel")
    spec.timeout_seconds = _ext_int(channel, EXT_TIMEOUT, "Subscription.channel")
    spec.max_count = _ext_int(channel, EXT_MAX_COUNT, "Subscription.channel") or 1


def mask_headers(resource: dict) -> None:
    """Replace each channel.header value with MASK, keeping the header name."""
    channel = resource.get("channel")
    if isinstance(channel, dict) and isinstance(channel.get("header"), list):
        channel["header"] = [f"{h.split(':', 1)[0].strip()}: {MASK}" for h in channel["header"]]


def restore_masked(headers: list[str], previous: list[str]) -> list[str]:
    """A client that PUTs back what it read sends masked values: keep the secrets
    already held for those header names."""
    held = {h.split(":", 1)[0].strip().lower(): h for h in previous}
    out = []
    for h in headers:
        name, _, value = h.partition(":")
        if value.strip() == MASK and name.strip().lower() in held:
            out.append(held[name.strip().lower()])
        else:
            out.append(h)
    return out


def watched_types(spec: SubscriptionSpec, topic) -> list[str]:
    """Resource types whose changes this subscription must look at."""
    if spec.kind == "r4":
        return [spec.criteria_type]
    return sorted({t.resource for t in topic.triggers})
