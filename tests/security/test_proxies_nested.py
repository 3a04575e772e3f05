"""Patient/$proxies lists a Consent that names the logged-in person only in a nested provision
(Consent.provision.provision...actor), by reference or by national identifier, with the
reason its rules give (search parameter `provision-actor`, search.server_params; security/
proxies.candidates). Real HTTP, real tokens."""

from __future__ import annotations

from datetime import date

from .family import ROLE, consent, patient
from .test_proxies_by_identifier import ALIASES, _listed


def _nested(actor_reference: dict, role: str = "POWATT", depth: int = 2) -> dict:
    inner: dict = {"type": "permit", "actor": [{"role": {"coding": [{"system": ROLE, "code": role}]}, "reference": actor_reference}]}
    for _ in range(depth - 1):
        inner = {"type": "permit", "period": {"start": "2020-01-01", "end": "2099-01-01"}, "provision": [inner]}
    return inner


def test_consent_naming_the_person_only_in_a_nested_provision_is_listed(client, as_person):
    attorney, number = patient(client, "DK", date(1970, 4, 4), name="Attorney")
    by_ref, _ = patient(client, "DK", date(1950, 2, 2), name="Adult by reference")
    by_number, _ = patient(client, "DK", date(1951, 3, 3), name="Adult by number")
    deep, _ = patient(client, "DK", date(1952, 4, 4), name="Adult deep")
    unrelated, _ = patient(client, "DK", date(1953, 5, 5), name="Other")
    c1 = consent(client, by_ref, _nested({"reference": f"Patient/{attorney}"}))
    c2 = consent(client, by_number, _nested({"identifier": {"system": ALIASES["DK"], "value": number}}))
    c3 = consent(client, deep, _nested({"reference": f"Patient/{attorney}"}, depth=4))
    _, stranger = patient(client, "DK", date(1971, 7, 7))
    consent(client, unrelated, _nested({"identifier": {"system": ALIASES["DK"], "value": stranger}}))

    listed = _listed(as_person(attorney, patient=attorney))
    assert set(listed) == {f"Patient/{by_ref}", f"Patient/{by_number}", f"Patient/{deep}"}
    for pid, cid in ((by_ref, c1), (by_number, c2), (deep, c3)):
        (reason,) = listed[f"Patient/{pid}"]
        assert reason["kind"]["valueCode"] == "consent"
        assert reason["source"]["valueReference"]["reference"] == f"Consent/{cid}"
        assert reason["detail"]["valueString"] == "permit as POWATT"
        assert reason["until"]["valueDateTime"].startswith("2099-01-0")  # the ancestors' period bounds it
