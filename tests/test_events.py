"""Change subscribers, for all resource types or for some."""

from __future__ import annotations

from fhir_server import events


def test_typed_subscriber_sees_only_its_types():
    seen = []

    def fn(_conn, change):
        seen.append(change.res_type)

    saved = list(events._subscribers)
    events._subscribers.clear()
    try:
        assert not events.has_subscribers("Patient")
        events.subscribe(fn, types=("ClaimResponse",))
        assert events.has_subscribers("ClaimResponse") and not events.has_subscribers("Patient")
        assert events.has_subscribers()
        for t in ("Patient", "ClaimResponse"):
            events.emit(None, events.ResourceChange(t, "1", 1, "create", None, {}))
        assert seen == ["ClaimResponse"]
        events.unsubscribe(fn)
        assert not events.has_subscribers("ClaimResponse")
    finally:
        events._subscribers[:] = saved
