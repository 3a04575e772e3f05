"""Plugin hooks of the policy engine (fhir_server.plugins): the Consent write rule and
the default-period preparer (security.consent_writes). The acting-for rules themselves
are always on (security.authz calls security.acting); the per-request layer is added by
auth.protect."""

from __future__ import annotations


def setup(settings) -> None:
    from . import case_grants, consent_writes

    consent_writes.setup()
    case_grants.setup()  # the case-consent table, kept in each Consent write's transaction
