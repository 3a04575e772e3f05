"""$validate for every served resource type, at type and instance level, in each mode
(create, update, delete): it answers, finds a structural error, checks the id of an
update, and a delete neither deletes nor, for the append-only AuditEvent, passes."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from tests.conftest import SHARED_DATA

EXAMPLES = SHARED_DATA / "fhir-r4-examples"
H = {"Content-Type": "application/fhir+json"}
# Official examples that do not validate (see tests/api/test_examples_roundtrip.py).
SKIP_FILES = {"examplescenario-questionnaire.json"}


def _one_example_per_type() -> dict[str, dict]:
    from fhir_server.model.definitions import resource_types

    served = set(resource_types())
    out: dict[str, dict] = {}
    for path in sorted(EXAMPLES.glob("*.json")):
        if path.name in SKIP_FILES:
            continue
        resource = json.loads(path.read_bytes())
        rtype = resource.get("resourceType")
        if rtype in served and rtype not in out:
            out[rtype] = resource
    return out


def _outcome(r, where: str, problems: list[str]) -> list[dict]:
    if r.status_code != 200 or r.json().get("resourceType") != "OperationOutcome":
        problems.append(f"{where}: {r.status_code} {r.text[:200]}")
        return []
    return r.json()["issue"]


def _errors(issues: list[dict]) -> list[dict]:
    return [i for i in issues if i["severity"] in ("error", "fatal")]


APPEND_ONLY = {"AuditEvent"}  # neither updated nor deleted (docs/audit.md): those modes report an error


def _validate(client, url: str, resource: dict, mode: str):
    """POST $validate with `mode`: in a Parameters body, or for a Parameters resource (which
    is its own body) as a query parameter."""
    if resource.get("resourceType") == "Parameters":
        return client.post(f"{url}?mode={mode}", json=resource, headers=H)
    return client.post(url, json=_params(resource, mode), headers=H)


def _params(resource: dict, mode: str) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}, {"name": "mode", "valueCode": mode}]}


@pytest.mark.skipif(not EXAMPLES.exists(), reason="../shared/data/fhir-r4-examples is absent")
def test_validate_every_type_every_level_every_mode(client):
    from fhir_server.model.definitions import resource_types

    examples = _one_example_per_type()
    assert set(examples) == set(resource_types())  # every served type has an example to try
    problems: list[str] = []
    for rtype, example in sorted(examples.items()):
        base = f"/fhir/{rtype}"
        body = {k: v for k, v in copy.deepcopy(example).items() if k not in ("id", "meta")}
        rid = f"val-{uuid.uuid4().hex[:12]}"
        # type level, mode create (default and explicit, raw and Parameters)
        _outcome(client.post(f"{base}/$validate", json=body, headers=H), f"{rtype} type", problems)
        _outcome(_validate(client, f"{base}/$validate", body, "create"), f"{rtype} type create", problems)
        # a structural error is found, with its expression, for this type too
        bad = _errors(_outcome(client.post(f"{base}/$validate?mode=create", json={**body, "notAnElement": 1}, headers=H),
                               f"{rtype} bad", problems))
        if not any(f"{rtype}.notAnElement" in e for i in bad for e in i.get("expression", [])):
            problems.append(f"{rtype}: unknown element not reported: {bad}")
        # type level, mode update: the body must carry its id
        upd = _errors(_outcome(_validate(client, f"{base}/$validate", body, "update"), f"{rtype} type update", problems))
        if [i["expression"] for i in upd if i["code"] == "required"] != [[f"{rtype}.id"]]:
            problems.append(f"{rtype}: update without id not reported: {upd}")
        # instance level: the stored resource, update with the right and a wrong id, delete
        if rtype in APPEND_ONLY:
            put = client.post(base, json=body, headers=H)
            rid = put.json().get("id", rid)
        else:
            put = client.put(f"{base}/{rid}", json={**body, "id": rid}, headers=H)
        if put.status_code not in (200, 201):
            problems.append(f"{rtype}: example not stored: {put.status_code} {put.text[:200]}")
            continue
        _outcome(client.get(f"{base}/{rid}/$validate"), f"{rtype} instance stored", problems)
        same = _errors(_outcome(_validate(client, f"{base}/{rid}/$validate", {**body, "id": rid}, "update"),
                                f"{rtype} instance update", problems))
        if any(f"{rtype}.id" in i.get("expression", []) for i in same):
            problems.append(f"{rtype}: matching id reported: {same}")
        if (rtype in APPEND_ONLY) != any(i["code"] == "not-supported" for i in same):
            problems.append(f"{rtype}: update mode {'misses' if rtype in APPEND_ONLY else 'invents'} the append-only refusal: {same}")
        wrong = _errors(_outcome(_validate(client, f"{base}/{rid}/$validate", {**body, "id": "other"}, "update"),
                                 f"{rtype} instance update wrong id", problems))
        if [i["expression"] for i in wrong if i["code"] == "invalid" and "does not match" in i.get("diagnostics", "")] != [[f"{rtype}.id"]]:
            problems.append(f"{rtype}: mismatched id not reported: {wrong}")
        deleted = _errors(_outcome(client.post(f"{base}/{rid}/$validate?mode=delete", headers=H), f"{rtype} instance delete", problems))
        if [i["code"] for i in deleted] != (["not-supported"] if rtype in APPEND_ONLY else []):
            problems.append(f"{rtype}: delete mode errors: {deleted}")
        if client.post(f"{base}/{rid}-no/$validate?mode=delete", headers=H).status_code != 404:
            problems.append(f"{rtype}: delete mode of an unknown id is not 404")
        if client.get(f"{base}/{rid}").status_code != 200:
            problems.append(f"{rtype}: delete mode deleted it")
    assert not problems, "\n".join(problems[:40])
