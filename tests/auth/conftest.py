"""Helpers for the security tests: fresh valid national numbers, PKCE pairs."""

from __future__ import annotations

import base64
import hashlib
import random
import secrets

from stdnum import luhn
from stdnum.pl import pesel as _pesel

SE_PNR = "http://electronichealth.se/identifier/personnummer"
PL_PESEL = "urn:oid:2.16.840.1.113883.3.4424.1.1.616"
DK_CPR = "urn:oid:1.2.208.176.1.2"

_rng = random.Random()


def personnummer() -> tuple[str, str]:
    """(12-digit canonical, written form 'YYMMDD-NNNN') of a fresh valid personnummer."""
    yy, mm, dd = _rng.randint(40, 99), _rng.randint(1, 12), _rng.randint(1, 28)
    body = f"{yy:02d}{mm:02d}{dd:02d}{_rng.randint(0, 999):03d}"
    ten = body + luhn.calc_check_digit(body)
    return f"19{ten}", f"{ten[:6]}-{ten[6:]}"


def pesel() -> str:
    body = f"{_rng.randint(50, 99):02d}{_rng.randint(1, 12):02d}{_rng.randint(1, 28):02d}{_rng.randint(0, 9999):04d}"
    return body + _pesel.calc_check_digit(body)


def cpr() -> tuple[str, str]:
    """(canonical DDMMYYSSSS, written DDMMYY-SSSS) for someone born in the 1900s."""
    dd, mm, yy = _rng.randint(1, 28), _rng.randint(1, 12), _rng.randint(40, 99)
    seq = f"{_rng.randint(0, 3)}{_rng.randint(0, 999):03d}"
    canonical = f"{dd:02d}{mm:02d}{yy:02d}{seq}"
    return canonical, f"{canonical[:6]}-{seq}"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge
