"""History `_at` (http://hl7.org/fhir/R4/http.html#history): a date(Time) with search
prefixes, keeping every version that was current at some point in the period."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote


def _three_versions(client) -> tuple[str, list[str]]:
    rid = f"at-{uuid.uuid4().hex[:8]}"
    stamps = []
    for n in range(3):
        r = client.put(f"/fhir/Basic/{rid}", json={"resourceType": "Basic", "id": rid, "code": {"text": f"v{n + 1}"}})
        assert r.status_code in (200, 201)
        stamps.append(r.json()["meta"]["lastUpdated"])
        time.sleep(0.02)
    return rid, stamps


def _vids(client, rid: str, at: str | list[str]) -> list[str]:
    ats = [at] if isinstance(at, str) else at
    q = "&".join(f"_at={quote(a)}" for a in ats)
    r = client.get(f"/fhir/Basic/{rid}/_history?{q}")
    assert r.status_code == 200, r.text
    return sorted(e["resource"]["meta"]["versionId"] for e in r.json().get("entry", []))


def test_at_a_day_returns_every_version_current_that_day(client):
    rid, stamps = _three_versions(client)
    today = stamps[0][:10]
    assert _vids(client, rid, today) == ["1", "2", "3"]
    assert _vids(client, rid, today[:7]) == ["1", "2", "3"]  # the month
    day_before = (datetime.fromisoformat(today) - timedelta(days=1)).date().isoformat()
    assert _vids(client, rid, day_before) == []  # it did not exist yet
    tomorrow = (datetime.fromisoformat(today) + timedelta(days=1)).date().isoformat()
    assert _vids(client, rid, tomorrow) == ["3"]  # still current


def test_at_an_instant_and_prefixes(client):
    rid, (t1, t2, t3) = _three_versions(client)
    assert _vids(client, rid, t1) == ["1"]
    assert _vids(client, rid, t2) == ["2"]
    assert _vids(client, rid, "ge" + t2) == ["2", "3"]
    assert _vids(client, rid, "gt" + t2) == ["2", "3"]  # v2 stays current past t2's millisecond
    assert _vids(client, rid, "gt" + t3) == ["3"]
    assert _vids(client, rid, "lt" + t2) == ["1"]
    assert _vids(client, rid, "le" + t2) == ["1", "2"]
    assert _vids(client, rid, "sa" + t1) == ["2", "3"]
    assert _vids(client, rid, "eb" + t3) == ["1", "2"]
    assert _vids(client, rid, "ne" + t2) == ["1", "3"]
    assert _vids(client, rid, ["ge" + t1, "lt" + t3]) == ["1", "2"]  # repeated: all must hold
    far = (datetime.now(timezone.utc) + timedelta(days=3650)).strftime("%Y")
    assert _vids(client, rid, "lt" + far) == ["1", "2", "3"]
    assert _vids(client, rid, "2000") == []


def test_at_with_time_zone_offset(client):
    rid, (t1, _t2, _t3) = _three_versions(client)
    utc = datetime.fromisoformat(t1.replace("Z", "+00:00"))
    local = utc.astimezone(timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")
    assert _vids(client, rid, local) == ["1"]


def test_at_type_and_system_level(client):
    rid, (t1, _t2, _t3) = _three_versions(client)
    for url in (f"/fhir/Basic/_history?_at={quote(t1)}&_count=1000", f"/fhir/_history?_at={quote(t1)}&_count=1000"):
        r = client.get(url)
        assert r.status_code == 200, r.text
        mine = [e["resource"]["meta"]["versionId"] for e in r.json()["entry"] if e["fullUrl"].endswith(f"/Basic/{rid}")]
        assert mine == ["1"]


def test_bad_at_is_400(client):
    rid, _ = _three_versions(client)
    for bad in ("yesterday", "xx2024-05-01", "2024-13-01", "ge"):
        r = client.get(f"/fhir/Basic/{rid}/_history?_at={bad}")
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["issue"][0]["expression"] == ["_at"]
