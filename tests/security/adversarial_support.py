"""Shared set-up of the session-7 adversarial tests (test_adversarial_reads.py,
test_adversarial_search.py): patient tokens, hostile references, and reads made both through
the fast path and through the router."""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient

from .family import consent, new_id, patient, proxy_provision, put, related_person

OWN_BASE = "http://testserver/fhir"


# ---------------------------------------------------------------- helpers


def obs(client, subject: dict | None = None, performer: list[dict] | None = None, oid: str | None = None, **extra) -> str:
    oid = oid or new_id("obs")
    res = {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "adv7"}, **extra}
    if subject is not None:
        res["subject"] = subject
    if performer is not None:
        res["performer"] = performer
    put(client, res)
    return oid


def ref(target: str) -> dict:
    return {"reference": target}


def both_reads(c: TestClient, path: str) -> tuple:
    """(fast-path response, router response) of a GET by id."""
    return c.get(path), c.get(path + "?_pretty=false")


def assert_hidden(c: TestClient, path: str) -> None:
    before = len(c.membership_reads)
    fast, routed = both_reads(c, path)
    _, res_type, res_id = path.rsplit("/", 2)
    if res_type not in ("Binary", "AuditEvent"):  # these always go to the app
        assert (res_type, res_id) in c.membership_reads[before:], ("the fast path was not consulted", path)
    assert (fast.status_code, routed.status_code) == (404, 404), (path, fast.status_code, fast.text[:300], routed.status_code)


def assert_visible(c: TestClient, path: str) -> None:
    fast, routed = both_reads(c, path)
    assert (fast.status_code, routed.status_code) == (200, 200), (path, fast.status_code, fast.text[:300], routed.status_code)
    assert fast.json()["id"] == routed.json()["id"]


def ids(bundle: dict, res_type: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if res_type is None or e["resource"]["resourceType"] == res_type}


def search(c: TestClient, path: str, params=None, headers=None) -> dict:
    r = c.get(path, params=params, headers=headers)
    assert r.status_code == 200, (path, params, r.status_code, r.text[:500])
    return r.json()


def _teen_with_one_denied_observation(client):
    """(child, parent, denied Observation, allowed Observation): a 13-year-old's Consent lets the
    parent act for them, except for one Observation (a nested deny provision naming it)."""
    child, _ = patient(client, "SE", _years_ago(13, 30))
    parent, number = patient(client, "SE", date(1981, 8, 8), name="Parent")
    related_person(client, child, ["PRN"], identifier=("http://electronichealth.se/identifier/personnummer", number))
    secret = obs(client, ref(f"Patient/{child}"), valueString="CHILD-SECRET")
    allowed = obs(client, ref(f"Patient/{child}"))
    consent(client, child, {"type": "permit", "actor": proxy_provision(f"Patient/{parent}")["actor"],
                            "provision": [{"type": "deny", "data": [{"meaning": "instance", "reference": ref(f"Observation/{secret}")}]}]})
    return child, parent, secret, allowed


def _years_ago(years: int, days: int = 0) -> date:
    from datetime import datetime, timezone

    t = datetime.now(timezone.utc).date()
    born = t.replace(year=t.year - years)
    return date.fromordinal(born.toordinal() - days)
