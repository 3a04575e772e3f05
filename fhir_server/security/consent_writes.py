"""Consent writes, checked and completed (a rest/rules.py write rule and preparer).

Preparer (before validation): a Consent whose root `provision.period` has no `end` gets
one from the policy template of the patient's jurisdiction
(mappings/consent/proxy_policy.yaml `consent_templates`: the Danish portal's consent lasts
one year): end = start (or now) + `period_years`. The client's own end is never changed.

Rule (422 `invalid` / `code-invalid`, nothing written):
- `scope` must carry a coding from the R4 value set consent-scope and `category` at least
  one coding from consent-category or a v3 consent directive code (the list in
  mappings/consent/proxy_policy.yaml; R4's own examples use them). Both bindings are
  extensible in R4; this server holds Consents to them because the policy engine reads them;
- in a `patient-privacy` Consent a permit or deny for a case (its `data` names a Claim,
  EpisodeOfCare, Encounter or CarePlan: a per-case proxy or a case consent) must name
  `actor` itself or through its parent: whom it concerns (the proxy, the case's handlers).
  Provisions for everyone (an opt-out, a SMART app's permit) need no actor;
- `provision.data` of a case (Claim, EpisodeOfCare, Encounter, CarePlan) needs a
  relative reference `Type/id`.
"""

from __future__ import annotations

from sqlalchemy import Connection

from ..errors import FhirError, Issue

SCOPE_VS = "http://hl7.org/fhir/ValueSet/consent-scope"
CATEGORY_VS = "http://hl7.org/fhir/ValueSet/consent-category"


def _in_value_set(concept, url: str, extra: dict | None = None) -> bool:
    from ..terminology.package import binding_tables

    expansion = binding_tables()["valueSets"].get(url) or {}
    for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
        if isinstance(c, dict) and c.get("code") in (extra or {}).get(c.get("system"), ()):
            return True
    for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
        if isinstance(c, dict) and c.get("code") in expansion.get(c.get("system"), ()):
            return True
    return False


def _country_of_patient(conn: Connection, consent: dict) -> str | None:
    from .proxies import _read
    from .proxy_policy import birth_and_country

    ref = (consent.get("patient") or {}).get("reference")
    if not isinstance(ref, str) or not ref.startswith("Patient/"):
        return None
    patient = _read(conn, ref)
    return birth_and_country(patient)[1] if patient else None


def default_period(conn: Connection, ctx, res_id: str | None, parsed) -> None:
    """Fill the root provision's period end from the template (see the module docstring)."""
    from .. import clock
    from .consent_rules import parse_instant
    from .proxy_policy import add_years, policy

    plain = parsed.plain
    if plain.get("resourceType") != "Consent" or plain.get("status") not in ("active", "proposed", "draft"):
        return
    root = plain.get("provision")
    if root is not None and not isinstance(root, dict):
        return
    period = (root or {}).get("period") or {}
    if not isinstance(period, dict) or period.get("end"):
        return
    years = policy().template(_country_of_patient(conn, plain)).get("period_years")
    if not years:
        return
    start = parse_instant(period.get("start")) or clock.now()
    end = add_years(start.date(), int(years)).isoformat()
    start_text = period.get("start") or start.date().isoformat()
    for doc in (parsed.plain, parsed.preserving):
        prov = doc.setdefault("provision", {})
        per = prov.setdefault("period", {})
        per.setdefault("start", start_text)
        per["end"] = end


def _case_refs(p: dict) -> list[str]:
    from .proxy_policy import policy

    out = []
    for d in p.get("data") or []:
        ref = ((d or {}).get("reference") or {}).get("reference") if isinstance(d, dict) else None
        if isinstance(ref, str) and "/" in ref and ref.split("/")[-2] in policy().case_types:
            out.append(ref)
    return out


def _provisions(p: dict, path: str, named: bool, out: list) -> None:
    has_actor = bool(p.get("actor"))
    out.append((p, path, named or has_actor))
    for i, child in enumerate(p.get("provision") or []):
        if isinstance(child, dict):
            _provisions(child, f"{path}.provision[{i}]", named or has_actor, out)


def consent_rule(conn: Connection, res_type: str, res_id: str | None, resource: dict) -> list[Issue]:
    if res_type != "Consent":
        return []
    from .proxy_policy import policy

    issues: list[Issue] = []
    if not _in_value_set(resource.get("scope"), SCOPE_VS):
        issues.append(Issue("error", "code-invalid", f"Consent.scope must have a coding from {SCOPE_VS} (adr, research, patient-privacy, treatment)", ["Consent.scope"]))
    if not any(_in_value_set(c, CATEGORY_VS, policy().extra_category_codes) for c in resource.get("category") or []):
        issues.append(Issue("error", "code-invalid", f"Consent.category needs a coding from {CATEGORY_VS}", ["Consent.category"]))
    root = resource.get("provision")
    privacy = any(isinstance(c, dict) and c.get("code") == "patient-privacy" for c in ((resource.get("scope") or {}).get("coding") or []))
    if isinstance(root, dict):
        found: list = []
        _provisions(root, "Consent.provision", False, found)
        for p, path, named in found:
            if privacy and p.get("type") in ("permit", "deny") and not named and _case_refs(p):
                issues.append(Issue("error", "required", f"A {p['type']} provision of a patient-privacy Consent must name who it concerns ({path}.actor): "
                                                         "a proxy permit or deny without an actor grants or refuses no one", [f"{path}.actor"]))
            for i, d in enumerate(p.get("data") or []):
                ref = ((d or {}).get("reference") or {}).get("reference") if isinstance(d, dict) else None
                rtype = ref.split("/")[-2] if isinstance(ref, str) and ref.count("/") >= 1 else None
                if rtype in policy().case_types and not (isinstance(ref, str) and len(ref.split("/")) >= 2 and ref.split("/")[-1]):
                    issues.append(Issue("error", "value", f"{path}.data[{i}].reference must be Type/id", [f"{path}.data[{i}].reference"]))
    if issues:
        raise FhirError(422, issues)
    return []


def setup() -> None:
    from ..rest import rules

    rules.register(consent_rule, "security.consent")
    rules.register_preparer("Consent", default_period, "security.consent_period")
    from .case_consent import mark_waiting

    rules.register_preparer("DocumentReference", mark_waiting, "security.case_consent")

