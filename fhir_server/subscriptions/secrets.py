"""Channel header secrets sealed at rest (issue 17, "Security").

`Subscription.channel.header` lines carry credentials for the subscriber's endpoint
(`Authorization: Bearer ...`). The stored and served resource shows `Name: ***`
(spec.mask_headers); the real lines live only in the engine's `subscriptions.spec`,
and there they are sealed with Fernet (AES-128-CBC + HMAC-SHA256, `cryptography`):
the spec JSON holds `headers: []` and `sealed_headers: <Fernet token>`. Delivery
unseals them just before sending.

Keys, kept like the built-in issuer's signing keys:

- `FHIR_SERVER_SUBSCRIPTION_SECRET_KEYS`: comma-separated Fernet keys (url-safe
  base64 of 32 bytes, `python -c "from cryptography.fernet import Fernet;
  print(Fernet.generate_key().decode())"`); the FIRST seals, all of them unseal
  (rotation: put the new key first, keep the old ones until re-sealed);
- otherwise a key generated on first start and kept in the `auth_keys` table
  (alg `fernet`, next to the signing keys), shared by every process on the database.
  Several keys there (two processes that started on an empty database at once) all
  unseal; the oldest seals.

Errors: `SecretsUnavailable` when a sealed value cannot be opened by any known key
(delivery then fails that attempt, like an unreachable endpoint; nothing is sent
without its headers).
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timezone

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Connection, insert, select

from ..storage.schema import auth_keys

ALG = "fernet"  # auth_keys.alg of the header-sealing keys (signing keys are RS256/ES256)

_lock = threading.Lock()
_configured: list[bytes] = []
_db_keys: dict[str, list[bytes]] = {}  # database URL -> keys read from auth_keys (oldest first)


class SecretsUnavailable(Exception):
    """No known key opens the sealed channel headers."""


def configure(settings) -> None:
    """Read FHIR_SERVER_SUBSCRIPTION_SECRET_KEYS; ValueError for a malformed key."""
    keys = [k.strip().encode() for k in (getattr(settings, "subscription_secret_keys", "") or "").split(",") if k.strip()]
    for k in keys:
        try:
            Fernet(k)
        except (ValueError, TypeError):
            raise ValueError("FHIR_SERVER_SUBSCRIPTION_SECRET_KEYS holds a value that is not a Fernet key "
                             "(url-safe base64 of 32 bytes)") from None
    _configured[:] = keys


def _kid(key: bytes) -> str:
    return "subscription-headers-" + hashlib.sha256(key).hexdigest()[:16]


def _read(conn: Connection) -> list[bytes]:
    rows = conn.execute(select(auth_keys.c.private_pem).where(auth_keys.c.alg == ALG)
                        .order_by(auth_keys.c.created, auth_keys.c.kid)).scalars().all()
    return [r.encode() for r in rows]


def ensure_key(engine) -> None:
    """At start-up: make the database's sealing key unless one exists (or keys are configured)."""
    if _configured:
        return
    with engine.begin() as conn:
        if _read(conn):
            return
        key = Fernet.generate_key()
        conn.execute(insert(auth_keys).values(kid=_kid(key), alg=ALG, private_pem=key.decode(),
                                              created=datetime.now(timezone.utc), retired=None))


def _keys(conn: Connection, fresh: bool = False) -> list[bytes]:
    if _configured:
        return list(_configured)
    url = str(conn.engine.url)
    with _lock:
        cached = _db_keys.get(url)
    if cached and not fresh:
        return cached
    keys = _read(conn)
    if not keys:  # a database set up without start-up hooks: make the key in this transaction
        key = Fernet.generate_key()
        conn.execute(insert(auth_keys).values(kid=_kid(key), alg=ALG, private_pem=key.decode(),
                                              created=datetime.now(timezone.utc), retired=None))
        return [key]  # not cached: should the transaction roll back, so does the key
    with _lock:
        _db_keys[url] = keys
    return keys


def seal(conn: Connection, spec_json: dict) -> dict:
    """The spec JSON with its `headers` sealed (`headers: []`, `sealed_headers`)."""
    out = dict(spec_json)
    headers = out.get("headers") or []
    out["headers"] = []
    out["sealed_headers"] = Fernet(_keys(conn)[0]).encrypt(json.dumps(headers).encode()).decode() if headers else None
    return out


def unseal(conn: Connection, spec_json: dict) -> dict:
    """The spec JSON with its real `headers` (SecretsUnavailable if no key opens them)."""
    out = dict(spec_json)
    token = out.pop("sealed_headers", None)
    if not token:
        return out
    for fresh in (False, True):  # a key made by another process since we last looked
        try:
            out["headers"] = json.loads(MultiFernet([Fernet(k) for k in _keys(conn, fresh)]).decrypt(token.encode()))
            return out
        except InvalidToken:
            continue
    raise SecretsUnavailable("the channel headers are sealed with a key this server does not hold")
