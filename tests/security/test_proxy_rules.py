"""The acting-for rules (security.proxies.resolve), table-driven, against the database:
age per country around the birthday, guardians, consents (period, revocation, case
limits, deny over permit), two guardians, power of attorney for an adult."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from fhir_server.security.acting import grant_criteria
from fhir_server.security.authz import Criteria
from fhir_server.security.proxies import resolve

from .family import AGES, SYSTEMS, consent, new_id, patient, proxy_provision, put, related_person

BORN = date(2012, 3, 10)


def at(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(app):
    return app.state.db


def grant_of(db, actor: str, pid: str, now: datetime):
    return db.run_read(lambda conn: resolve(conn, actor, pid, now))


def parent_of(client, child: str, country: str = "SE", codes=("PRN",)) -> str:
    """A parent Patient (national number) and the child's RelatedPerson naming the same number."""
    pid, number = patient(client, country, date(1980, 5, 17), name="Parent")
    related_person(client, child, list(codes) if codes else None, identifier=(SYSTEMS[country], number))
    return f"Patient/{pid}"


@pytest.mark.parametrize("country", sorted(AGES))
@pytest.mark.parametrize("source", ["national-number", "birthDate"])
@pytest.mark.parametrize("offset,allowed", [(-1, True), (0, False), (1, False)])
def test_guardian_access_ends_on_the_self_service_birthday(client, db, country, source, offset, allowed):
    child, _ = patient(client, country, BORN, birth_date_only=source == "birthDate")
    parent = parent_of(client, child, country)
    birthday = BORN.replace(year=BORN.year + AGES[country])
    grant = grant_of(db, parent, child, at(birthday + timedelta(days=offset)))
    assert grant.allowed is allowed
    if allowed:
        assert grant.full and grant.reasons[0].kind == "guardian"
        assert grant.reasons[0].until == birthday.isoformat()


def test_ages_come_from_the_mapping_for_every_country():
    from fhir_server.security.proxy_policy import self_service_age

    assert {c: self_service_age(c) for c in AGES} == AGES


@pytest.mark.parametrize("codes,allowed", [(None, False), (["FRND"], False), (["MTH"], True), (["GUARD"], True), (["NFTH"], True)])
def test_only_parent_or_guardian_relationships_count(client, db, codes, allowed):
    child, _ = patient(client, "SE", BORN)
    parent = parent_of(client, child, "SE", codes)
    assert grant_of(db, parent, child, at(date(2020, 1, 1))).allowed is allowed


def test_unknown_age_gives_no_implicit_access(client, db):
    child, _ = patient(client)  # no number, no birthDate
    parent = parent_of(client, child)
    assert not grant_of(db, parent, child, at(date(2020, 1, 1))).allowed


def test_guardian_found_by_link_and_as_related_person_user(client, db):
    child, _ = patient(client, "DK", BORN)
    rp = related_person(client, child, ["FTH"])
    parent = new_id("pat")
    put(client, {"resourceType": "Patient", "id": parent, "link": [{"type": "seealso", "other": {"reference": f"RelatedPerson/{rp}"}}]})
    assert grant_of(db, f"Patient/{parent}", child, at(date(2020, 1, 1))).allowed
    assert grant_of(db, f"RelatedPerson/{rp}", child, at(date(2020, 1, 1))).allowed
    # a Person linking both works too
    other_rp = related_person(client, child, ["MTH"])
    mother = new_id("pat")
    put(client, {"resourceType": "Patient", "id": mother})
    put(client, {"resourceType": "Person", "id": new_id("person"), "link": [
        {"target": {"reference": f"Patient/{mother}"}}, {"target": {"reference": f"RelatedPerson/{other_rp}"}}]})
    assert grant_of(db, f"Patient/{mother}", child, at(date(2020, 1, 1))).allowed
    # an inactive RelatedPerson gives nothing
    third_rp = related_person(client, child, ["PRN"], active=False)
    assert not grant_of(db, f"RelatedPerson/{third_rp}", child, at(date(2020, 1, 1))).allowed


def test_two_guardians_and_a_stranger(client, db):
    child, _ = patient(client, "PL", BORN)
    mother = parent_of(client, child, "PL", ["MTH"])
    father = parent_of(client, child, "PL", ["FTH"])
    stranger, _ = patient(client, "PL", date(1979, 1, 2), name="Stranger")
    now = at(date(2021, 6, 1))
    assert grant_of(db, mother, child, now).allowed
    assert grant_of(db, father, child, now).allowed
    assert not grant_of(db, f"Patient/{stranger}", child, now).allowed


@pytest.fixture
def teen(client):
    """A Danish 16-year-old (over the self-service age 15) and a parent."""
    child, _ = patient(client, "DK", date(2010, 1, 5))
    return child, parent_of(client, child, "DK", ["MTH"])


NOW = at(date(2026, 11, 30))


def test_teen_without_consent_is_not_reachable(client, db, teen):
    child, parent = teen
    assert not grant_of(db, parent, child, NOW).allowed


@pytest.mark.parametrize("end,allowed", [("2026-11-29", False), ("2026-11-30", True), ("2026-12-01", True)])
def test_consent_period_expired_yesterday_or_ending_tomorrow(client, db, teen, end, allowed):
    child, parent = teen
    consent(client, child, proxy_provision(parent, start="2026-01-01", end=end))
    grant = grant_of(db, parent, child, NOW)
    assert grant.allowed is allowed
    if allowed:
        assert grant.reasons[0].kind == "consent"


def test_consent_not_started_yet(client, db, teen):
    child, parent = teen
    consent(client, child, proxy_provision(parent, start="2026-12-01", end="2027-12-01"))
    assert not grant_of(db, parent, child, NOW).allowed


@pytest.mark.parametrize("status", ["inactive", "rejected", "entered-in-error", "proposed", "draft"])
def test_revoked_or_unfinished_consent_grants_nothing(client, db, teen, status):
    child, parent = teen
    consent(client, child, proxy_provision(parent, end="2027-06-01"), status=status)
    assert not grant_of(db, parent, child, NOW).allowed


def test_revocation_is_seen_at_the_next_evaluation(client, db, teen):
    child, parent = teen
    cid = consent(client, child, proxy_provision(parent, end="2027-06-01"))
    assert grant_of(db, parent, child, NOW).allowed
    consent(client, child, proxy_provision(parent, end="2027-06-01"), status="inactive", cid=cid)
    assert not grant_of(db, parent, child, NOW).allowed


def test_case_limited_consent(client, db, teen):
    child, parent = teen
    consent(client, child, proxy_provision(parent, data=["Claim/c1"], end="2027-06-01"))
    grant = grant_of(db, parent, child, NOW)
    assert grant.allowed and not grant.full and set(grant.items) == {"Claim/c1"}
    assert grant_criteria(grant, "Claim") == [Criteria(params=(("_id", "c1"),))]
    assert Criteria(params=(("related", "Claim/c1"),)) in grant_criteria(grant, "DocumentReference")
    assert grant_criteria(grant, "Observation") == []
    assert grant_criteria(grant, "Patient") == [Criteria(params=(("_id", child),))]


def test_deny_overrides_permit_and_guardianship(client, db, teen):
    child, parent = teen
    consent(client, child, proxy_provision(parent, end="2027-06-01"))
    assert grant_of(db, parent, child, NOW).allowed
    consent(client, child, proxy_provision(parent, kind="deny", end="2027-06-01"))
    assert not grant_of(db, parent, child, NOW).allowed
    # a young child's deny (e.g. recorded by the care unit) beats the guardian rule too
    small, _ = patient(client, "SE", BORN)
    guardian = parent_of(client, small)
    assert grant_of(db, guardian, small, at(date(2020, 1, 1))).allowed
    consent(client, small, proxy_provision(guardian, kind="deny", start="2019-01-01", end="2030-01-01"))
    assert not grant_of(db, guardian, small, at(date(2020, 1, 1))).allowed


def test_deny_of_one_case_inside_a_full_permit(client, db, teen):
    child, parent = teen
    consent(client, child, {"type": "permit", "actor": proxy_provision(parent)["actor"],
                            "period": {"end": "2027-06-01"},
                            "provision": [{"type": "deny", "data": [{"meaning": "related", "reference": {"reference": "Claim/secret"}}]}]})
    grant = grant_of(db, parent, child, NOW)
    assert grant.full and grant.denied == {"Claim/secret"}
    assert grant_criteria(grant, "Claim") == [Criteria(exclude=(("_id", "secret"),))]


def test_power_of_attorney_for_an_adult(client, db):
    adult, _ = patient(client, "SE", date(1950, 2, 2), name="Adult")
    helper, _ = patient(client, "SE", date(1985, 2, 2), name="Helper")
    consent(client, adult, proxy_provision(f"Patient/{helper}", role="POWATT", data=["Claim/case-9"], end="2027-01-01", actions=["access"]))
    grant = grant_of(db, f"Patient/{helper}", adult, NOW)
    assert grant.allowed and set(grant.items) == {"Claim/case-9"}
    assert grant.reasons[0].detail == "permit as POWATT" and grant.reasons[0].actions == ("access",)
    assert grant.allows_action(frozenset({"access"})) and not grant.allows_action(frozenset({"correct"}))


def test_actor_named_by_national_identifier(client, db, teen):
    child, _ = teen
    helper, number = patient(client, "DK", date(1975, 4, 4), name="Aunt")
    p = {"type": "permit", "period": {"end": "2027-06-01"},
         "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "HPOWATT"}]},
                    "reference": {"identifier": {"system": SYSTEMS["DK"], "value": number[:6] + "-" + number[6:]}}}]}
    consent(client, child, p)
    assert grant_of(db, f"Patient/{helper}", child, NOW).allowed
