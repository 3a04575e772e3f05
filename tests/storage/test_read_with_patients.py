"""The fast read path decides whether a patient token may see a resource from the Patient ids
its compartment parameters reference in the reference index, read in the same statement as
the resource (`storage.async_reads.*.read_with_patients`). Those ids must be what the rule in
hand (`search.membership.patients_of`, the indexer's converters) finds in the resource, on both
readers, for generated resources with every kind of reference; and a patient token must then
see exactly the resources in its compartment."""

from __future__ import annotations

import asyncio
import random

from fhir_server.search import local_base
from fhir_server.search.membership import patients_of
from fhir_server.search.registry import patient_compartment
from fhir_server.storage.async_reads import reader_for

from ..conftest import make_token

_REFS = ["Patient/{a}", "Patient/{b}", "Group/{a}", "Practitioner/{a}", "RelatedPerson/{a}",
         "http://testserver/fhir/Patient/{b}", "https://other.example/fhir/Patient/{a}", "Patient/{a}/_history/1"]
_SHAPES = {
    "Observation": lambda ref: {"status": "final", "code": {"text": "x"}, "subject": ref(), "performer": [ref(), ref()]},
    "Encounter": lambda ref: {"status": "finished", "class": {"code": "AMB"}, "subject": ref()},
    "DocumentReference": lambda ref: {"status": "current", "content": [{"attachment": {"url": "x"}}], "subject": ref(),
                                      "author": [ref()]},
    "Claim": lambda ref: {"status": "active", "patient": ref(), "payee": {"type": {"text": "x"}, "party": ref()},
                          "type": {"text": "x"}, "use": "claim", "created": "2026-01-01", "provider": ref(),
                          "priority": {"text": "normal"}, "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "x"}}]},
    "Patient": lambda ref: {"link": [{"other": ref(), "type": "seealso"}]},
    "Organization": lambda ref: {"name": "not in any compartment"},
}


def test_readers_find_the_patients_the_resource_references(client, database_url):
    rnd = random.Random(29)
    a = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    b = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]

    def ref():
        return {"reference": rnd.choice(_REFS).format(a=a, b=b)}

    stored = []
    for res_type, shape in _SHAPES.items():
        for _ in range(12):
            r = client.post(f"/fhir/{res_type}", json={"resourceType": res_type, **shape(ref)})
            assert r.status_code == 201, r.text
            stored.append(r.json())

    async def read_all():
        reader = reader_for(database_url, 2)
        await reader.open()
        try:
            return [await reader.read_with_patients(res["resourceType"], res["id"], patient_compartment().get(res["resourceType"], ()))
                    for res in stored]
        finally:
            await reader.close()

    answers = asyncio.run(read_all())
    with_patients = 0
    with local_base.serving("http://testserver/fhir"):
        for res, (row, found) in zip(stored, answers):
            assert row is not None and row.res_id == res["id"]
            expected = patients_of(res["resourceType"], res)
            if res["resourceType"] == "Patient":
                expected = [p for p in expected if p != res["id"]]  # its own id: fast_read adds it
            assert sorted(set(found)) == sorted(set(expected)), res
            with_patients += bool(found)
    assert with_patients > 30


def test_patient_token_reads_what_its_compartment_holds(client, anonymous_client):
    a = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    b = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    cases = {
        "own subject": ({"reference": f"Patient/{a}"}, [], 200),
        "own as performer only": ({"reference": f"Patient/{b}"}, [{"reference": f"Patient/{a}"}], 200),
        "own by this server's absolute URL": ({"reference": f"http://testserver/fhir/Patient/{a}"}, [], 200),
        "a Group with the same id": ({"reference": f"Group/{a}"}, [], 404),
        "another server's Patient": ({"reference": f"https://other.example/fhir/Patient/{a}"}, [], 404),
        "another patient": ({"reference": f"Patient/{b}"}, [], 404),
    }
    headers = {"Authorization": f"Bearer {make_token('patient/*.rs', patient=a)}"}
    for name, (subject, performer, status) in cases.items():
        body = {"resourceType": "Observation", "status": "final", "code": {"text": name}, "subject": subject}
        obs = client.post("/fhir/Observation", json={**body, **({"performer": performer} if performer else {})}).json()
        r = anonymous_client.get(f"/fhir/Observation/{obs['id']}", headers=headers)
        assert r.status_code == status, (name, r.text)
    assert anonymous_client.get(f"/fhir/Patient/{a}", headers=headers).status_code == 200
    assert anonymous_client.get(f"/fhir/Patient/{b}", headers=headers).status_code == 404
