"""Signing keys of the built-in issuer: generated on first start and kept in the database,
or read from a configured PEM file; rotated with `fhir-server keys rotate`.

Keys are joserfc JWKs (RSA 2048 signing RS256, or EC P-256 signing ES256 when the PEM
file holds an EC key). A rotated key is marked `retired`: it no longer signs, but stays
in the JWKS, and so keeps verifying, until every token it signed has expired
(`auth_token_ttl` after the rotation); then it is dropped.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import delete, insert, select, update

from ..storage.schema import auth_keys


@dataclass
class SigningKeys:
    current: RSAKey | ECKey  # signs new tokens
    all: KeySet  # current + retired keys still verifying


# auth_keys also keeps the subscriptions' header-sealing key (alg "fernet"): not a signing key
_signing = auth_keys.c.alg.in_(("RS256", "ES256", "RS384", "ES384"))


def _alg_of(key) -> str:
    return "ES256" if isinstance(key, ECKey) else "RS256"


def _with_kid(key, alg: str):
    """The key with kid (its RFC 7638 thumbprint), alg and use set."""
    kid = key.thumbprint()
    return key.__class__.import_key(key.as_dict(private=True), parameters={"kid": kid, "alg": alg, "use": "sig"})


def load_pem(path: str):
    data = Path(path).read_bytes()
    try:
        key = RSAKey.import_key(data)
    except Exception:
        key = ECKey.import_key(data)
    return _with_kid(key, _alg_of(key))


def new_key():
    return _with_kid(RSAKey.generate_key(2048, private=True), "RS256")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def ensure_key(engine, settings) -> None:
    """Generate the first signing key unless one exists (or a PEM file is configured)."""
    if settings.auth_signing_key_file:
        return
    with engine.begin() as conn:
        if conn.execute(select(auth_keys.c.kid).where(auth_keys.c.retired.is_(None), _signing).limit(1)).first():
            return
        key = new_key()
        conn.execute(insert(auth_keys).values(kid=key.kid, alg=_alg_of(key), private_pem=key.as_pem(private=True).decode(), created=_now(), retired=None))


def rotate(engine, settings) -> str:
    """Make a new current key; the old one verifies until its tokens expire. Returns the new kid."""
    if settings.auth_signing_key_file:
        raise ValueError("The signing key comes from FHIR_SERVER_AUTH_SIGNING_KEY_FILE: replace that file to rotate")
    key = new_key()
    now = _now()
    with engine.begin() as conn:
        conn.execute(update(auth_keys).where(auth_keys.c.retired.is_(None), _signing).values(retired=now))
        conn.execute(delete(auth_keys).where(auth_keys.c.retired < now - timedelta(seconds=settings.auth_token_ttl + settings.auth_clock_skew), _signing))
        conn.execute(insert(auth_keys).values(kid=key.kid, alg=_alg_of(key), private_pem=key.as_pem(private=True).decode(), created=now, retired=None))
    return key.kid


def read_keys(engine, settings) -> SigningKeys:
    if settings.auth_signing_key_file:
        key = load_pem(settings.auth_signing_key_file)
        return SigningKeys(key, KeySet([key]))
    cutoff = _now() - timedelta(seconds=settings.auth_token_ttl + settings.auth_clock_skew)
    with engine.connect() as conn:
        rows = conn.execute(select(auth_keys).where(_signing).order_by(auth_keys.c.created.desc())).all()
    current = None
    keys = []
    for row in rows:
        retired = row.retired
        if retired is not None and retired.tzinfo is None:
            retired = retired.replace(tzinfo=timezone.utc)
        if retired is not None and retired < cutoff:
            continue
        cls = ECKey if row.alg.startswith("ES") else RSAKey
        key = cls.import_key(row.private_pem, parameters={"kid": row.kid, "alg": row.alg, "use": "sig"})
        keys.append(key)
        if retired is None and current is None:
            current = key
    if current is None:
        raise RuntimeError("no signing key: run the server once (or `fhir-server keys rotate`)")
    return SigningKeys(current, KeySet(keys))


class KeyCache:
    """The issuer's keys, re-read from the database at most every `min_interval` seconds
    when asked for a kid it does not know (another process rotated)."""

    def __init__(self, engine, settings, min_interval: float = 5.0):
        self.engine = engine
        self.settings = settings
        self.min_interval = min_interval
        self._keys: SigningKeys | None = None
        self._loaded = 0.0
        self._lock = threading.Lock()

    def get(self) -> SigningKeys:
        if self._keys is None:
            self.reload(force=True)
        return self._keys  # type: ignore[return-value]

    def reload(self, force: bool = False) -> bool:
        with self._lock:
            if not force and self._keys is not None and time.monotonic() - self._loaded < self.min_interval:
                return False
            self._keys = read_keys(self.engine, self.settings)
            self._loaded = time.monotonic()
            return True

    def find(self, kid: str | None):
        """The verifying key `kid`, or None (also when no key exists yet)."""
        try:
            keys = self.get()
        except RuntimeError:  # no key generated yet (a bare create_app on a fresh database)
            return None
        for k in keys.all.keys:
            if k.kid == kid:
                return k
        if self.reload():
            for k in self._keys.all.keys:  # type: ignore[union-attr]
                if k.kid == kid:
                    return k
        return None

    def public_jwks(self) -> dict:
        return self.get().all.as_dict(private=False)
