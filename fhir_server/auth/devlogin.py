"""DEVELOPMENT ONLY: a test login page at the authorize endpoint where one picks a national
identity instead of logging in with BankID, Freja, MitID or Profil Zaufany.

Off unless `FHIR_SERVER_DEV_LOGIN=true`; the page says so in large letters. The chosen
identity is resolved exactly as an eID login is (identity.py): to the Patient (or, with
"staff", the Practitioner) carrying that national identifier in any written form.
"""

from __future__ import annotations

from html import escape

from ..errors import FhirError
from ..identifiers.engine import normalise
from ..identifiers.registry import all_schemes, canonical_system
from .grants import User
from .identity import patient_for, resolve


def login_page(params: dict, error: str | None = None) -> str:
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items() if not k.startswith("login_"))
    options = "".join(f'<option value="{escape(s.system)}">{escape(s.country)} - {escape(s.name)}</option>' for s in all_schemes())
    err = f'<p style="color:#b00"><b>{escape(error)}</b></p>' if error else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>TEST LOGIN (development only)</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1 style="background:#fc0;padding:.5em">TEST LOGIN - DEVELOPMENT ONLY</h1>
<p>This page replaces the national eID login (BankID, Freja, MitID, Profil Zaufany) while
<code>FHIR_SERVER_DEV_LOGIN=true</code>. Never enable it with real data.</p>
<p>Client <b>{escape(params.get("client_id", ""))}</b> asks for: <code>{escape(params.get("scope", ""))}</code></p>
{err}
<form method="post" action="/auth/authorize">{hidden}
<p><label>National identifier system <select name="login_system">{options}</select></label></p>
<p><label>National identity number <input name="login_value" required></label></p>
<p><label><input type="checkbox" name="login_staff" value="1"> log in as staff (Practitioner)</label></p>
<p><button type="submit">Log in (test)</button></p></form></body></html>"""


def user_from_form(db, settings, form: dict) -> User:
    """The User of the chosen identity; ValueError (shown on the page) when unknown or invalid."""
    system = form.get("login_system", "")
    value = form.get("login_value", "")
    normalised = normalise(system, value)
    if normalised is None:
        raise ValueError(f"'{value}' is not a valid number of {system}")
    subject = f"{canonical_system(system)}|{normalised}"
    try:
        if form.get("login_staff"):
            pid = resolve(db, system, value, "Practitioner")
            if pid is None:
                raise ValueError("No Practitioner has this national identifier")
            return User(subject=subject, fhir_user=f"Practitioner/{pid}")
        pid = patient_for(db, settings, system, value, {}, settings.auth_unknown_person)
    except FhirError as exc:
        raise ValueError(exc.issues[0].diagnostics) from None
    return User(subject=subject, patient=pid, fhir_user=f"Patient/{pid}")
