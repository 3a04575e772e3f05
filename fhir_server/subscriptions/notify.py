"""What a notification looks like on the wire.

Topic-based (Backport IG, R4): a Bundle of type `history` whose first entry is
the SubscriptionStatus Parameters (profile backport-subscription-status-r4)
with `type` handshake | heartbeat | event-notification | query-status |
query-event, `events-since-subscription-start`, and one `notification-event`
per event (`event-number`, `timestamp`, `focus`); then, per payload content,
the focus resources (full-resource), their URLs only (id-only), or nothing
(empty).

R4 criteria subscriptions (http://hl7.org/fhir/R4/subscription.html#2.46.7):
rest-hook without payload is a POST with no body; with a payload the resource
is sent as an update, PUT [endpoint]/[type]/[id] (DELETE for a deletion);
websocket sends `ping <id>`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson

from ..model import jsonio
from .spec import BACKPORT, SubscriptionSpec

STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"


@dataclass
class Event:
    """One outbox row as delivery sees it (`resource`: the stored version, or None)."""

    number: int
    kind: str
    topic: str | None
    res_type: str | None
    res_id: str | None
    version_id: int | None
    method: str | None
    timestamp: str
    resource: bytes | None = None


def status_parameters(base_url: str, sub_id: str, topic: str | None, status: str, kind: str,
                      events_since_start: int, events: list[Event], error: str | None = None) -> dict:
    params: list[dict] = [
        {"name": "subscription", "valueReference": {"reference": f"{base_url}/Subscription/{sub_id}"}},
    ]
    if topic:
        params.append({"name": "topic", "valueCanonical": topic})
    params += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for e in events:
        part = [{"name": "event-number", "valueString": str(e.number)},
                {"name": "timestamp", "valueInstant": e.timestamp}]
        if e.res_type and e.res_id:
            part.append({"name": "focus", "valueReference": {"reference": _focus_url(base_url, e)}})
        params.append({"name": "notification-event", "part": part})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def _focus_url(base_url: str, e: Event) -> str:
    return f"{base_url}/{e.res_type}/{e.res_id}/_history/{e.version_id}" if e.version_id else f"{base_url}/{e.res_type}/{e.res_id}"


def notification_bundle(base_url: str, sub_id: str, spec: SubscriptionSpec, status: str, kind: str,
                        events_since_start: int, events: list[Event], content: str | None = None) -> bytes:
    """The history Bundle for a handshake, heartbeat, notification or $events answer."""
    content = content or spec.content
    params = status_parameters(base_url, sub_id, spec.topic, status, kind, events_since_start,
                               [e for e in events if e.kind == "event-notification"])
    entries: list[dict] = [{
        "fullUrl": f"urn:uuid:{params['id']}",
        "resource": params,
        "request": {"method": "GET", "url": f"{base_url}/Subscription/{sub_id}/$status"},
        "response": {"status": "200"},
    }]
    if content != "empty":
        for e in events:
            if e.kind != "event-notification" or not e.res_type:
                continue
            method = {"create": "POST", "delete": "DELETE"}.get(e.method or "", "PUT")
            entry: dict = {
                "fullUrl": f"{base_url}/{e.res_type}/{e.res_id}",
                "request": {"method": method, "url": e.res_type if method == "POST" else f"{e.res_type}/{e.res_id}"},
                "response": {"status": {"POST": "201", "DELETE": "204"}.get(method, "200")},
            }
            if content == "full-resource" and e.resource:
                entry["resource"] = orjson.Fragment(e.resource)
            entries.append(entry)
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history",
              "timestamp": events[0].timestamp if events else None, "entry": entries}
    if bundle["timestamp"] is None:
        del bundle["timestamp"]
    return jsonio.dumps(bundle)


@dataclass
class Request:
    """An HTTP request to make for a rest-hook notification."""

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]


def header_dict(spec: SubscriptionSpec) -> dict[str, str]:
    out = {}
    for h in spec.headers:
        name, _, value = h.partition(":")
        out[name.strip()] = value.strip()
    return out


def rest_hook_request(base_url: str, sub_id: str, spec: SubscriptionSpec, status: str, kind: str,
                      events_since_start: int, events: list[Event]) -> Request:
    headers = header_dict(spec)
    if spec.kind == "topic":
        headers["Content-Type"] = spec.payload or "application/fhir+json"
        body = notification_bundle(base_url, sub_id, spec, status, kind, events_since_start, events)
        return Request("POST", spec.endpoint or "", body, headers)
    e = events[0]
    if not spec.payload:
        return Request("POST", spec.endpoint or "", None, headers)
    url = f"{(spec.endpoint or '').rstrip('/')}/{e.res_type}/{e.res_id}"
    if e.method == "delete" or not e.resource:
        return Request("DELETE", url, None, headers)
    headers["Content-Type"] = spec.payload
    return Request("PUT", url, e.resource, headers)


def websocket_message(base_url: str, sub_id: str, spec: SubscriptionSpec, status: str, kind: str,
                      events_since_start: int, events: list[Event]) -> str:
    if spec.kind == "r4":
        return f"ping {sub_id}"
    return notification_bundle(base_url, sub_id, spec, status, kind, events_since_start, events).decode()
