"""Tables of the subscriptions engine (migration 0002_subscriptions).

`subscriptions` mirrors each Subscription resource's delivery state (its parsed
spec with the real channel headers, owner, event counter, failures, lease);
`subscription_types` indexes them by the resource types they watch, so a write
to a type nobody watches costs one index probe; `subscription_events` is the
outbox: one row per notification, written in the transaction of the change.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from ..storage.schema import PK, metadata

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),  # the Subscription resource id
    Column("status", String(16), nullable=False),  # requested | active | error | off
    Column("kind", String(8), nullable=False),  # r4 (criteria) | topic (backport)
    Column("channel_type", String(16), nullable=False),  # rest-hook | websocket
    Column("spec", Text, nullable=False),  # JSON: parsed criteria/topic/filters/channel, real headers
    Column("owner", Text, nullable=True),  # JSON: the principal that created or last changed it
    Column("events_since_start", BigInteger, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),  # consecutive failed deliveries
    Column("next_attempt", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("heartbeat_seconds", Integer, nullable=True),
    Column("last_sent", DateTime(timezone=True), nullable=True),
    Column("updated", DateTime(timezone=True), nullable=False),
)

subscription_types = Table(
    "subscription_types",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("sub_id", String(64), primary_key=True),
)

subscription_events = Table(
    "subscription_events",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("sub_id", String(64), nullable=False),
    Column("event_number", BigInteger, nullable=False),  # 0 for handshake and heartbeat
    Column("kind", String(24), nullable=False),  # event-notification | handshake | heartbeat
    Column("topic", String(512), nullable=True),
    Column("res_type", String(64), nullable=True),
    Column("res_id", String(64), nullable=True),
    Column("version_id", Integer, nullable=True),
    Column("method", String(8), nullable=True),  # create | update | patch | delete
    Column("created", DateTime(timezone=True), nullable=False),
    Column("status", String(12), nullable=False),  # pending | sent | withheld
    Column("attempts", Integer, nullable=False, default=0),
    Column("sent", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
)
Index("ix_subscription_events_sub_status", subscription_events.c.sub_id, subscription_events.c.status, subscription_events.c.id)
Index("ix_subscription_events_sub_number", subscription_events.c.sub_id, subscription_events.c.event_number)

# $get-ws-binding-token: short-lived bearer tokens, stored as SHA-256 digests.
subscription_ws_tokens = Table(
    "subscription_ws_tokens",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("sub_ids", Text, nullable=False),  # JSON list
    Column("expires", DateTime(timezone=True), nullable=False),
)
