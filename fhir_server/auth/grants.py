"""What the authorization server remembers between requests, in the `auth_grants` table:
authorization codes (5 minutes, used once), refresh tokens (rotated: each use makes a
new one and retires the old), revoked access-token ids (until the token would have
expired), and client-assertion `jti` values (replay protection, RFC 7523 §3).

Only a SHA-256 of each secret is stored, never the secret itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, TokenMixin
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..storage.schema import auth_grants


def handle(kind: str, secret: str) -> str:
    return hashlib.sha256(f"{kind}\x1f{secret}".encode()).hexdigest()


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass
class User:
    """The person an authorization code / refresh token was granted for."""

    subject: str
    patient: str | None = None
    fhir_user: str | None = None

    def get_user_id(self):
        return self.subject


@dataclass
class Grant:
    kind: str
    client_id: str
    data: dict
    expires: datetime
    used: bool

    @property
    def expired(self) -> bool:
        return _utc(self.expires) <= datetime.now(timezone.utc)


class CodeRecord(AuthorizationCodeMixin):
    def __init__(self, code: str, grant: Grant):
        self.code = code
        self.grant = grant
        self.code_challenge = grant.data.get("code_challenge")
        self.code_challenge_method = grant.data.get("code_challenge_method")
        self.user = User(**grant.data["user"])

    def get_redirect_uri(self):
        return self.grant.data.get("redirect_uri")

    def get_scope(self):
        return self.grant.data.get("scope") or ""

    def get_nonce(self):
        return self.grant.data.get("nonce")

    def get_auth_time(self):
        return self.grant.data.get("auth_time")


class RefreshRecord(TokenMixin):
    def __init__(self, token: str, grant: Grant):
        self.token = token
        self.grant = grant
        self.user = User(**grant.data["user"])

    def check_client(self, client):
        return client.get_client_id() == self.grant.client_id

    def get_scope(self):
        return self.grant.data.get("scope") or ""

    def get_expires_in(self):
        return max(0, int(_utc(self.grant.expires).timestamp() - time.time()))

    def is_expired(self):
        return self.grant.expired

    def is_revoked(self):
        return self.grant.used

    def get_user(self):
        return self.user

    def get_client(self):
        return None


class GrantStore:
    def __init__(self, engine):
        self.engine = engine

    def put(self, kind: str, secret: str, client_id: str, data: dict, ttl: int) -> None:
        expires = datetime.now(timezone.utc) + timedelta(seconds=ttl)
        with self.engine.begin() as conn:
            conn.execute(insert(auth_grants).values(handle=handle(kind, secret), kind=kind, client_id=client_id, data=json.dumps(data), expires=expires, used=False))

    def get(self, kind: str, secret: str) -> Grant | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_grants).where(auth_grants.c.handle == handle(kind, secret))).first()
        if row is None or row.kind != kind:
            return None
        return Grant(row.kind, row.client_id, json.loads(row.data), row.expires, bool(row.used))

    def use(self, kind: str, secret: str) -> bool:
        """Mark as used; True if this call used it (a second use gets False)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(auth_grants).where(auth_grants.c.handle == handle(kind, secret), auth_grants.c.used.is_(False)).values(used=True)
            )
        return result.rowcount == 1

    def once(self, kind: str, secret: str, client_id: str, ttl: int) -> bool:
        """Record a single-use value (a jti); False when it was seen before."""
        try:
            self.put(kind, secret, client_id, {}, ttl)
            return True
        except IntegrityError:
            return False

    def exists(self, kind: str, secret: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(auth_grants.c.handle).where(auth_grants.c.handle == handle(kind, secret))).first() is not None

    def purge(self) -> int:
        """Drop what has expired."""
        with self.engine.begin() as conn:
            return conn.execute(delete(auth_grants).where(auth_grants.c.expires < datetime.now(timezone.utc))).rowcount


def user_dict(user: User) -> dict:
    return asdict(user)
