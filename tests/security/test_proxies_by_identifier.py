"""Patient/$proxies lists a Consent that names the logged-in person only by national
identifier (provision.actor.reference.identifier), with no RelatedPerson linking them:
any alias of the identifier system, any written form (security/proxies.candidates via
`Consent?actor:identifier=`, search/national.reference_identifier_forms)."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi.testclient import TestClient

from fhir_server import identifiers

from .family import ROLE, consent, patient

ALIASES = {  # another spelling of each scheme's system, as a Consent may carry it
    "DK": "urn:oid:1.2.208.176.1.2",
    "SE": "urn:oid:1.2.752.129.2.1.3.1",
    "PL": "urn:oid:2.16.840.1.113883.3.4424.1.1.616",
}


def _by_identifier(system: str, value: str, role: str = "POWATT", **period) -> dict:
    p = {"type": "permit", "actor": [{"role": {"coding": [{"system": ROLE, "code": role}]},
                                      "reference": {"identifier": {"system": system, "value": value}, "display": "Attorney"}}]}
    if period:
        p["period"] = period
    return p


def _listed(c: TestClient) -> dict[str, list[dict]]:
    r = c.get("/fhir/Patient/$proxies")
    assert r.status_code == 200, r.text
    out = {}
    for p in r.json().get("parameter") or []:
        ref = next(x for x in p["part"] if x["name"] == "patient")["valueReference"]["reference"]
        out[ref] = [{y["name"]: y for y in x["part"]} for x in p["part"] if x["name"] == "reason"]
    return out


@pytest.mark.parametrize("country", ["DK", "SE", "PL"])
def test_consent_naming_the_person_by_identifier_is_listed(client, as_person, country):
    attorney, number = patient(client, country, date(1970, 4, 4) if country != "PL" else date(2001, 4, 4), name="Attorney")
    adult, _ = patient(client, country, date(1950, 2, 2) if country != "PL" else date(2002, 2, 2), name="Adult")
    other, _ = patient(client, country, date(1955, 5, 5) if country != "PL" else date(2003, 5, 5), name="Other")
    forms = identifiers.written_forms(ALIASES[country], number)
    written = forms[-1]  # not the canonical form the Patient carries
    cid = consent(client, adult, _by_identifier(ALIASES[country], written, end="2099-01-01"))
    # someone else's number: not the attorney's concern
    _, stranger = patient(client, country, date(1971, 7, 7) if country != "PL" else date(2004, 7, 7))
    consent(client, other, _by_identifier(ALIASES[country], stranger))

    listed = _listed(as_person(attorney, patient=attorney))
    assert set(listed) == {f"Patient/{adult}"}
    (reason,) = listed[f"Patient/{adult}"]
    assert reason["kind"]["valueCode"] == "consent"
    assert reason["source"]["valueReference"]["reference"] == f"Consent/{cid}"
    assert reason["detail"]["valueString"] == "permit as POWATT"
    assert reason["until"]["valueDateTime"].startswith("2099-01-02")
    # and the listing agrees with what a request may do
    me = as_person(attorney, patient=attorney)
    assert me.get(f"/fhir/Patient/{adult}", headers={"X-Acting-For": f"Patient/{adult}"}).status_code == 200


def test_revoked_or_expired_consent_by_identifier_is_not_listed(client, as_person):
    attorney, number = patient(client, "DK", date(1970, 4, 4), name="Attorney")
    adult, _ = patient(client, "DK", date(1950, 2, 2))
    consent(client, adult, _by_identifier(ALIASES["DK"], number), status="inactive")
    consent(client, adult, _by_identifier(ALIASES["DK"], number, start="2020-01-01", end="2021-01-01"))
    assert _listed(as_person(attorney, patient=attorney)) == {}


def test_actor_identifier_search_any_alias_any_form(client):
    attorney, number = patient(client, "SE", date(1970, 4, 4))
    adult, _ = patient(client, "SE", date(1950, 2, 2))
    cid = consent(client, adult, _by_identifier(ALIASES["SE"], identifiers.written_forms(ALIASES["SE"], number)[1]))
    for system in ("http://electronichealth.se/identifier/personnummer", ALIASES["SE"]):
        for form in identifiers.written_forms(system, number):
            bundle = client.get("/fhir/Consent", params={"actor:identifier": f"{system}|{form}"}).json()
            assert {e["resource"]["id"] for e in bundle.get("entry") or []} == {cid}, (system, form)
