"""Patient/$everything: the patient, their compartment, referenced supporting
resources, _type/_since filters and keyset paging."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from .test_export import Server


@pytest.fixture
def client(tmp_path):
    server = Server(tmp_path)
    yield server.client
    server.close()


def create(client, resource: dict) -> str:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def record(client):
    """Two patients; the first with a GP, observations, an encounter and a condition."""
    org = create(client, {"resourceType": "Organization", "name": "Clinic"})
    gp = create(client, {"resourceType": "Practitioner", "name": [{"family": "Who"}]})
    pid = create(client, {"resourceType": "Patient", "generalPractitioner": [{"reference": f"Practitioner/{gp}"}], "managingOrganization": {"reference": f"Organization/{org}"}})
    other = create(client, {"resourceType": "Patient"})
    enc = create(client, {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{pid}"}})
    obs = [
        create(client, {"resourceType": "Observation", "status": "final", "code": {"text": f"o{i}"}, "subject": {"reference": f"Patient/{pid}"},
                        "performer": [{"reference": f"Practitioner/{gp}"}]})
        for i in range(5)
    ]
    cond = create(client, {"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"}})
    create(client, {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": f"Patient/{other}"}})
    return {"pid": pid, "gp": gp, "org": org, "enc": enc, "obs": obs, "cond": cond, "other": other}


def entries(bundle: dict, mode: str | None = None) -> list[tuple[str, str]]:
    return [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle.get("entry", []) if mode is None or e["search"]["mode"] == mode]


def test_everything_returns_compartment_and_supporting(client, record):
    r = client.get(f"/fhir/Patient/{record['pid']}/$everything")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    matches = entries(bundle, "match")
    assert matches[0] == ("Patient", record["pid"])
    assert set(matches) == {("Patient", record["pid"]), ("Encounter", record["enc"]), ("Condition", record["cond"])} | {("Observation", o) for o in record["obs"]}
    assert bundle["total"] == len(matches)
    assert set(entries(bundle, "include")) == {("Practitioner", record["gp"]), ("Organization", record["org"])}
    assert all(e["fullUrl"] == f"http://testserver/fhir/{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"])
    assert not [link for link in bundle["link"] if link["relation"] == "next"]


def test_everything_count_zero_gives_the_total_only(client, record):
    bundle = client.get(f"/fhir/Patient/{record['pid']}/$everything?_count=0").json()
    full = client.get(f"/fhir/Patient/{record['pid']}/$everything?_count=100").json()
    assert bundle["total"] == full["total"] == 8
    assert "entry" not in bundle and not [link for link in bundle["link"] if link["relation"] == "next"]


@pytest.mark.parametrize("size, pages", [(3, 3), (1, 8), (2, 4), (8, 1)])
def test_everything_paging(client, record, size, pages):
    """Every page size reaches all 8 matches once, the Patient first; with `_count=1` the Patient
    fills the first page and the next link goes on from the start of the compartment."""
    seen: list[tuple[str, str]] = []
    url = f"/fhir/Patient/{record['pid']}/$everything?_count={size}"
    served = 0
    while url and served < 20:
        bundle = client.get(url).json()
        served += 1
        page = entries(bundle, "match")
        assert 0 < len(page) <= size
        seen += page
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert served == pages
    assert seen[0] == ("Patient", record["pid"])
    assert len(seen) == len(set(seen)) == 8


def test_everything_type_and_since(client, record):
    bundle = client.get(f"/fhir/Patient/{record['pid']}/$everything", params={"_type": "Observation,Condition"}).json()
    assert {t for t, _ in entries(bundle, "match")} == {"Observation", "Condition"}
    assert not entries(bundle, "include")

    time.sleep(0.01)
    since = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    late = create(client, {"resourceType": "Observation", "status": "final", "code": {"text": "late"}, "subject": {"reference": f"Patient/{record['pid']}"}})
    bundle = client.get(f"/fhir/Patient/{record['pid']}/$everything", params={"_since": since}).json()
    assert entries(bundle, "match") == [("Observation", late)]


def test_everything_errors(client, record):
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404
    assert client.get(f"/fhir/Patient/{record['pid']}/$everything", params={"_count": "x"}).status_code == 400
    assert client.get(f"/fhir/Patient/{record['pid']}/$everything", params={"start": "2020"}).status_code == 400
    assert client.get(f"/fhir/Observation/{record['obs'][0]}/$everything").status_code == 400
    assert client.delete(f"/fhir/Patient/{record['other']}").status_code in (200, 204)
    assert client.get(f"/fhir/Patient/{record['other']}/$everything").status_code == 410
