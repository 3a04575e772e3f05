"""The server as real clients use it: fhirclient (strict R4 models) and fhirpy."""

from __future__ import annotations

import asyncio
import uuid

import pytest


def test_fhirclient_metadata_and_crud(live_server, auth_headers):
    from fhirclient import client as fc_client
    from fhirclient.models.capabilitystatement import CapabilityStatement
    from fhirclient.models.humanname import HumanName
    from fhirclient.models.patient import Patient

    smart = fc_client.FHIRClient(settings={"app_id": "tests", "api_base": live_server + "/"})
    smart.server.session.headers.update(auth_headers)  # a backend token (fhirclient's own SMART flow needs a browser)
    # the strict R4 model must accept our CapabilityStatement
    cs = CapabilityStatement.read_from("metadata", smart.server)
    assert cs.fhirVersion == "4.0.1"

    family = f"Fc{uuid.uuid4().hex[:8]}"
    p = Patient({"name": [{"family": family, "given": ["Ingrid"]}], "gender": "female"})
    created = p.create(smart.server)
    assert created["id"]
    read = Patient.read(created["id"], smart.server)
    assert read.name[0].family == family

    read.name = [HumanName({"family": family, "given": ["Ingrid", "Maria"]})]
    read.update(smart.server)
    again = Patient.read(created["id"], smart.server)
    assert again.name[0].given == ["Ingrid", "Maria"]
    assert again.meta.versionId == "2"

    found = list(Patient.where(struct={"family": family}).perform_resources_iter(smart.server))
    assert [x.id for x in found] == [created["id"]]

    again.delete(smart.server)
    with pytest.raises(Exception):
        Patient.read(created["id"], smart.server)


def test_fhirpy_sync_crud_and_search(live_server, auth_headers):
    from fhirpy import SyncFHIRClient

    client = SyncFHIRClient(live_server, authorization=auth_headers["Authorization"])
    family = f"Py{uuid.uuid4().hex[:8]}"
    patient = client.resource("Patient", name=[{"family": family, "given": ["Jan"]}], birthDate="1970-05-01")
    patient.save()
    assert patient.id
    patient["gender"] = "male"
    patient.save()
    fetched = client.reference("Patient", patient.id).to_resource()
    assert fetched["gender"] == "male"
    results = client.resources("Patient").search(family=family).fetch_all()
    assert [r.id for r in results] == [patient.id]
    assert client.resources("Patient").search(family=family, birthdate__ge="1970-01-01").count() == 1
    patient.delete()
    assert client.resources("Patient").search(family=family).fetch_all() == []


def test_fhirpy_async(live_server, auth_headers):
    from fhirpy import AsyncFHIRClient

    async def run():
        client = AsyncFHIRClient(live_server, authorization=auth_headers["Authorization"])
        family = f"As{uuid.uuid4().hex[:8]}"
        p = client.resource("Patient", name=[{"family": family}])
        await p.save()
        rows = await client.resources("Patient").search(family=family).fetch()
        assert [r.id for r in rows] == [p.id]
        obs = client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            subject=p.to_reference(),
            valueQuantity={"value": 61, "unit": "/min"},
        )
        await obs.save()
        got = await client.resources("Observation").search(subject=p.to_reference().reference, code="http://loinc.org|8867-4").fetch()
        assert [o.id for o in got] == [obs.id]

    asyncio.run(run())
