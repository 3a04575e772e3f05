"""Required bindings are errors, extensible/preferred ones warnings (R4 terminologies.html#strength)."""

from __future__ import annotations

import pytest

from fhir_server.model.validation import validate_resource

CLAIM_RESPONSE = {"resourceType": "ClaimResponse", "status": "active", "type": {"text": "x"}, "use": "claim",
                  "patient": {"reference": "Patient/1"}, "created": "2020-01-01",
                  "insurer": {"reference": "Organization/1"}, "outcome": "complete"}

# (resource, element path of the error, bound value set) -- one row per kind of coded element
REQUIRED_VIOLATIONS = [
    ({"resourceType": "Patient", "gender": "robot"}, "Patient.gender",
     "http://hl7.org/fhir/ValueSet/administrative-gender"),
    ({"resourceType": "Appointment", "status": "nonsense", "participant": [{"status": "accepted"}]},
     "Appointment.status", "http://hl7.org/fhir/ValueSet/appointmentstatus"),
    ({"resourceType": "Questionnaire", "status": "active", "item": [{"linkId": "a", "type": "notatype"}]},
     "Questionnaire.item[0].type", "http://hl7.org/fhir/ValueSet/item-type"),
    ({"resourceType": "Questionnaire", "status": "active",
      "item": [{"linkId": "a", "type": "group", "item": [{"linkId": "b", "type": "bogus"}]}]},
     "Questionnaire.item[0].item[0].type", "http://hl7.org/fhir/ValueSet/item-type"),  # contentReference
    ({"resourceType": "Task", "status": "ready", "intent": "order", "priority": "whenever"},
     "Task.priority", "http://hl7.org/fhir/ValueSet/request-priority"),
    ({**CLAIM_RESPONSE, "outcome": "approved-ish"}, "ClaimResponse.outcome",
     "http://hl7.org/fhir/ValueSet/remittance-outcome"),
    ({"resourceType": "Patient", "identifier": [{"use": "bogus", "value": "1"}]}, "Patient.identifier[0].use",
     "http://hl7.org/fhir/ValueSet/identifier-use"),  # a datatype's element
    ({"resourceType": "Patient", "telecom": [{"system": "pigeon", "value": "x"}]}, "Patient.telecom[0].system",
     "http://hl7.org/fhir/ValueSet/contact-point-system"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1, "comparator": "~"}},
     "Observation.valueQuantity.comparator", "http://hl7.org/fhir/ValueSet/quantity-comparator"),
    # a required CodeableConcept / Coding
    ({"resourceType": "Patient", "contact": [{"name": {"family": "x"}, "gender": "robot"}]},
     "Patient.contact[0].gender", "http://hl7.org/fhir/ValueSet/administrative-gender"),
    ({"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": "Patient/1"},
      "payor": [{"reference": "Organization/1"}], "costToBeneficiary": [{"valueMoney": {"value": 1},
      "exception": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-coverage-financial-exception", "code": "nope"}]}}]}]},
     None, None),
    ({"resourceType": "Subscription", "status": "active", "reason": "x", "criteria": "Patient?",
      "channel": {"type": "carrier-pigeon"}}, "Subscription.channel.type",
     "http://hl7.org/fhir/ValueSet/subscription-channel-type"),
    ({"resourceType": "Location", "mode": "instance", "status": "gone"}, "Location.status",
     "http://hl7.org/fhir/ValueSet/location-status"),
    ({"resourceType": "Consent", "status": "active", "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]},
      "category": [{"text": "x"}], "provision": {"type": "maybe"}}, "Consent.provision.type",
     "http://hl7.org/fhir/ValueSet/consent-provision-type"),
]


@pytest.mark.parametrize("resource,path,value_set", REQUIRED_VIOLATIONS)
def test_required_binding_violation_is_an_error(resource, path, value_set):
    issues = validate_resource(resource)
    if path is None:  # extensible CodeableConcept: never an error
        assert not [i for i in issues if i.code == "code-invalid"]
        return
    bad = [i for i in issues if i.code == "code-invalid"]
    assert [i.expression for i in bad] == [[path]], issues
    assert value_set in bad[0].diagnostics
    assert bad[0].severity == "error"


VALID = [
    {"resourceType": "Patient", "gender": "female", "identifier": [{"use": "official", "value": "1"}],
     "telecom": [{"system": "phone", "value": "1"}]},
    {"resourceType": "Appointment", "status": "booked", "participant": [{"status": "accepted"}]},
    {"resourceType": "Task", "status": "ready", "intent": "order", "priority": "stat"},
    CLAIM_RESPONSE,
]


@pytest.mark.parametrize("resource", VALID)
def test_codes_from_the_value_set_pass(resource):
    assert validate_resource(resource) == []


def test_required_codeable_concept_needs_a_coding_from_the_value_set():
    # Condition.clinicalStatus is a CodeableConcept with a required binding (condition-clinical)
    base = {"resourceType": "Condition", "subject": {"reference": "Patient/1"}}
    system = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    ok = {**base, "clinicalStatus": {"coding": [{"system": "http://example.org", "code": "x"},
                                                {"system": system, "code": "active"}]}}
    assert validate_resource(ok) == []
    wrong_system = {**base, "clinicalStatus": {"coding": [{"system": "http://example.org", "code": "active"}]}}
    wrong_code = {**base, "clinicalStatus": {"coding": [{"system": system, "code": "dormant"}]}}
    text_only = {**base, "clinicalStatus": {"text": "active"}}
    for resource in (wrong_system, wrong_code, text_only):
        issues = validate_resource(resource)
        assert [i.expression for i in issues] == [["Condition.clinicalStatus"]]
        assert "http://hl7.org/fhir/ValueSet/condition-clinical" in issues[0].diagnostics


@pytest.mark.parametrize("resource,path", [
    ({"resourceType": "Patient", "maritalStatus": {"coding": [{"system": "http://example.org", "code": "y"}]}},
     "Patient.maritalStatus"),  # extensible
    ({"resourceType": "Patient", "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "xx-YY"}]}}]},
     "Patient.communication[0].language"),  # preferred
])
def test_soft_bindings_give_warnings_not_errors(resource, path):
    warnings = []
    assert validate_resource(resource, warnings=warnings) == []
    assert [w.expression for w in warnings] == [[path]]
    assert warnings[0].severity == "warning"


def test_every_required_binding_of_the_definitions_is_compiled():
    from fhir_server.model.bindings import binding_table
    from fhir_server.terminology.package import binding_tables

    raw = binding_tables()
    required = {p for p, (s, u) in raw["bindings"].items() if s == "required"}
    compiled = {p for p, b in binding_table().items() if b.required}
    assert len(required) > 300
    # every required binding is compiled, except those to value sets that cannot be enumerated
    assert required - compiled == {p for p in required if raw["bindings"][p][1] in raw["open"]}
