"""Every official R4 example of a served type is accepted and read back unchanged."""

from __future__ import annotations

import base64
import json

import orjson
import pytest

from tests.conftest import SHARED_DATA

EXAMPLES = SHARED_DATA / "fhir-r4-examples"
# Official examples that are not valid R4 (nested Questionnaire.item without the required linkId).
INVALID_EXAMPLES = {"examplescenario-questionnaire.json": "Questionnaire.item[0].item[0].linkId"}


def _examples():
    if not EXAMPLES.exists():
        return []
    return sorted(p.name for p in EXAMPLES.glob("*.json"))


def _as_served(resource: dict) -> dict:
    """What the server changes on purpose: a requested Subscription is activated and
    its channel.header secrets are masked (docs/subscriptions.md); a Consent without a
    period end gets the policy template's (one year), a DocumentReference of a case
    without a case consent is tagged waiting for consent (docs/consent.md)."""
    if resource.get("resourceType") == "Consent":
        return _consent_as_served(resource)
    if resource.get("resourceType") == "DocumentReference":
        from fhir_server.security.case_consent import WAITING_TAG, cases_of

        if cases_of(resource):
            out = json.loads(json.dumps(resource))
            out.setdefault("meta", {}).setdefault("tag", []).append(dict(WAITING_TAG))
            return out
        return resource
    if resource.get("resourceType") != "Subscription":
        return resource
    out = json.loads(json.dumps(resource))
    if out.get("status") == "requested":
        out["status"] = "active"
    headers = (out.get("channel") or {}).get("header")
    if headers:
        out["channel"]["header"] = [h.split(":", 1)[0].strip() + ": ***" for h in headers]
    return out


def _consent_as_served(resource: dict) -> dict:
    from datetime import datetime, timezone

    from fhir_server.security.consent_rules import parse_instant
    from fhir_server.security.proxy_policy import add_years

    period = (resource.get("provision") or {}).get("period") or {}
    if resource.get("status") not in ("active", "proposed", "draft") or period.get("end"):
        return resource
    out = json.loads(json.dumps(resource))
    start = parse_instant(period.get("start")) or datetime.now(timezone.utc)
    per = out.setdefault("provision", {}).setdefault("period", {})
    per.setdefault("start", start.date().isoformat())
    per["end"] = add_years(start.date(), 1).isoformat()
    return out


def _strip(resource: dict) -> dict:
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    if resource.get("resourceType") == "Binary" and isinstance(out.get("data"), str):
        # base64 whitespace is not content: the server re-encodes the stored bytes
        out["data"] = base64.b64decode("".join(out["data"].split()))
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


@pytest.mark.skipif(not EXAMPLES.exists(), reason="../shared/data/fhir-r4-examples is absent")
def test_all_served_examples_round_trip(client):
    from fhir_server.model.definitions import resource_types

    served = resource_types()
    failures = []
    checked = 0
    for name in _examples():
        raw = (EXAMPLES / name).read_bytes()
        resource = json.loads(raw)
        rtype = resource.get("resourceType")
        if rtype not in served:
            continue
        checked += 1
        r = client.post(f"/fhir/{rtype}", content=raw, headers={"Content-Type": "application/fhir+json"})
        if name in INVALID_EXAMPLES:
            expressions = [e for i in r.json().get("issue", []) for e in i.get("expression", [])]
            if r.status_code != 400 or INVALID_EXAMPLES[name] not in expressions:
                failures.append(f"{name}: expected a 400 naming {INVALID_EXAMPLES[name]}, got {r.status_code}")
            continue
        if r.status_code != 201:
            failures.append(f"{name}: {r.status_code} {r.text[:300]}")
            continue
        # a Binary read without a FHIR Accept is the raw content (R4 binary.html)
        back = client.get(f"/fhir/{rtype}/{r.json()['id']}", headers={"Accept": "application/fhir+json"})
        if _strip(orjson.loads(back.content)) != _strip(_as_served(resource)):
            failures.append(f"{name}: read back differs")
    assert checked > 500
    assert not failures, "\n".join(failures)
