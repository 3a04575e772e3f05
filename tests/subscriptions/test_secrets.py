"""channel.header secrets: sealed at rest (Fernet), masked in every response, sent on delivery."""

from __future__ import annotations

import uuid

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from fhir_server.subscriptions import secrets
from fhir_server.subscriptions.tables import subscriptions

from .conftest import r4_subscription


def _raw_rows(app, sub_id: str) -> list[str]:
    """Everything the database holds about the subscription, as text."""
    with app.state.db.read() as conn:
        spec = conn.execute(select(subscriptions.c.spec).where(subscriptions.c.id == sub_id)).scalar_one()
        versions = conn.execute(text("SELECT content FROM resource_versions WHERE res_type = 'Subscription' AND res_id = :i"),
                                {"i": sub_id}).scalars().all()
        current = conn.execute(text("SELECT content FROM resources WHERE res_type = 'Subscription' AND res_id = :i"),
                               {"i": sub_id}).scalars().all()
    return [spec] + [bytes(v).decode() if isinstance(v, (bytes, memoryview)) else str(v) for v in versions + current]


def test_header_secret_is_sealed_at_rest_and_still_sent(app, client, subscribe, receiver, deliver):
    secret = "s3cret-" + uuid.uuid4().hex
    family = "Sealed" + uuid.uuid4().hex[:6]
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url, headers=[f"Authorization: Bearer {secret}"]))
    assert sub["channel"]["header"] == ["Authorization: ***"]
    assert all(secret not in row for row in _raw_rows(app, sub["id"]))
    # PUT back what was read (masked): the secret held is kept, still sealed
    assert client.put(f"/fhir/Subscription/{sub['id']}", json=sub).status_code == 200
    assert all(secret not in row for row in _raw_rows(app, sub["id"]))
    assert client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}).status_code == 201
    deliver()
    assert [r["headers"]["authorization"] for r in receiver.requests] == [f"Bearer {secret}"]
    # the sealing key lives next to the signing keys, and never signs
    with app.state.db.read() as conn:
        algs = conn.execute(text("SELECT alg FROM auth_keys")).scalars().all()
    assert "fernet" in algs
    assert client.get("/auth/jwks").json()["keys"] and all(k.get("kty") != "oct" for k in client.get("/auth/jwks").json()["keys"])


class _Conn:
    """Stands in for a connection when keys come from configuration (no database needed)."""

    class engine:
        url = "configured://"


def test_configured_keys_seal_and_rotate(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    try:
        secrets.configure(settings.model_copy(update={"subscription_secret_keys": old}))
        sealed = secrets.seal(_Conn(), {"headers": ["X-Api-Key: abc"], "kind": "r4"})
        assert sealed["headers"] == [] and "abc" not in sealed["sealed_headers"]
        # rotation: the new key seals, the old one still opens
        secrets.configure(settings.model_copy(update={"subscription_secret_keys": f"{new},{old}"}))
        assert secrets.unseal(_Conn(), sealed)["headers"] == ["X-Api-Key: abc"]
        resealed = secrets.seal(_Conn(), {"headers": ["X-Api-Key: abc"]})
        assert Fernet(new.encode()).decrypt(resealed["sealed_headers"].encode())
        # a key that is gone: nothing can be opened, nothing is sent in clear
        secrets.configure(settings.model_copy(update={"subscription_secret_keys": new}))
        with pytest.raises(secrets.SecretsUnavailable):
            secrets.unseal(_Conn(), sealed)
        with pytest.raises(ValueError):
            secrets.configure(settings.model_copy(update={"subscription_secret_keys": "not-a-key"}))
    finally:
        secrets.configure(settings)


def test_header_secret_is_never_logged(app, client, subscribe, receiver, deliver, caplog):
    """Create, a failed delivery (the path that logs), a retry that succeeds, $status:
    at DEBUG level no log record carries the secret."""
    import logging

    caplog.set_level(logging.DEBUG)
    secret = "s3cret-" + uuid.uuid4().hex
    family = "Unlogged" + uuid.uuid4().hex[:6]
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url, headers=[f"X-Api-Key: {secret}"]))
    assert client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}).status_code == 201
    fast = dict(subscription_retry_base_seconds=0.0, subscription_retry_max_seconds=0.0)
    receiver.status = 500
    deliver(**fast)
    receiver.status = 200
    deliver(**fast)
    assert client.get(f"/fhir/Subscription/{sub['id']}/$status").status_code == 200
    assert [r["headers"]["x-api-key"] for r in receiver.requests] == [secret]
    assert "delivery failed" in caplog.text  # the failure was logged ...
    assert secret not in caplog.text  # ... without the secret


def test_a_held_secret_never_follows_the_subscription_to_another_endpoint(app, client, subscribe, receiver, deliver):
    """PUT back with `Name: ***` keeps the secret only for the same endpoint: a writer who moves
    the subscription to a server of their own must send the value again (422 otherwise, nothing
    written), so the secret is never sent there."""
    from tests.subscriptions.conftest import Receiver

    secret = "s3cret-" + uuid.uuid4().hex
    family = "Moved" + uuid.uuid4().hex[:6]
    sub = subscribe(r4_subscription(f"Patient?family={family}", receiver.url, headers=[f"Authorization: Bearer {secret}"]))
    elsewhere = Receiver()
    try:
        moved = dict(sub, channel=dict(sub["channel"], endpoint=elsewhere.url))
        r = client.put(f"/fhir/Subscription/{sub['id']}", json=moved)
        assert r.status_code == 422, r.text
        assert r.json()["issue"][0]["expression"] == ["Subscription.channel.header"]
        assert client.get(f"/fhir/Subscription/{sub['id']}").json()["meta"]["versionId"] == "1"
        # with its own value the move is accepted, and the new value is what goes there
        moved["channel"]["header"] = ["Authorization: Bearer theirs"]
        assert client.put(f"/fhir/Subscription/{sub['id']}", json=moved).status_code == 200
        assert client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}).status_code == 201
        deliver()
        assert [r["headers"]["authorization"] for r in elsewhere.requests] == ["Bearer theirs"]
        assert receiver.requests == []
    finally:
        elsewhere.stop()
