"""Database schema: resources, their versions, narrow search-index tables, jobs.

One table holds the current version of every resource (the hot path for reads),
one holds every version (history, vread). Search values are extracted at write
time into one narrow table per search-parameter type, as HAPI does, so that a
search is an index lookup on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# BigInteger primary keys autoincrement on PostgreSQL; on SQLite only INTEGER does.
PK = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    # The JSON exactly as served (client text plus id/meta), UTF-8 bytes.
    Column("content", LargeBinary, nullable=True),
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
)
Index("ix_resources_type_updated", resources.c.res_type, resources.c.last_updated, resources.c.pk)
Index("ix_resources_updated", resources.c.last_updated, resources.c.pk)

resource_versions = Table(
    "resource_versions",
    metadata,
    # Global, monotonically increasing: orders system-level history and export.
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("res_pk", PK, ForeignKey("resources.pk"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("method", String(8), nullable=False),  # POST, PUT, PATCH, DELETE
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=True),
    UniqueConstraint("res_pk", "version_id", name="uq_versions_res_version"),
)
Index("ix_versions_type_id", resource_versions.c.res_type, resource_versions.c.res_id, resource_versions.c.version_id)
Index("ix_versions_type_updated", resource_versions.c.res_type, resource_versions.c.last_updated)
Index("ix_versions_updated", resource_versions.c.last_updated)


def _index_table(name: str, *columns: Column, indexes: list[tuple[str, ...]], include: tuple[str, ...] = ()) -> Table:
    """A narrow search-index table: one row per (resource, parameter, value)."""
    table = Table(
        name,
        metadata,
        Column("id", PK, primary_key=True, autoincrement=True),
        # No foreign key: index rows are written only in the transaction that writes
        # their resource, and resources rows are never deleted. The referential
        # check cost PostgreSQL a trigger and a lookup per row, a third of its CPU
        # per create (a Patient has 20-35 index rows).
        Column("res_pk", PK, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(128), nullable=False),
        # Composite search: component rows of one value combination share a grp.
        Column("grp", Integer, nullable=True),
        *columns,
    )
    Index(f"ix_{name}_res", table.c.res_pk)
    for cols in indexes:
        # res_pk last (migration 0020): a search's `pk IN (SELECT res_pk ...)` is answered
        # from the index alone, without reading a table row per match
        # (and the `include` columns a search compares besides the key, e.g. a date's other bound)
        extra = [c for c in include if c not in cols]
        Index(f"ix_{name}_{'_'.join(cols)}", table.c.res_type, table.c.param, *(table.c[c] for c in (*cols, *extra)),
              table.c.res_pk)
    return table


# string: value_norm is NFKD, accents stripped, casefolded (computed in Python).
idx_string = _index_table(
    "idx_string",
    Column("value_norm", String(512), nullable=False),
    Column("value_exact", Text, nullable=False),
    indexes=[("value_norm",)],
)
# PostgreSQL only (migration 0019): "starts with" as a code-point range in the C collation
Index("ix_idx_string_value_norm_c", idx_string.c.res_type, idx_string.c.param,
      idx_string.c.value_norm.collate("C"), idx_string.c.res_pk).ddl_if(dialect="postgresql")

# token: system may be NULL (no system), code may be NULL (e.g. text-only CodeableConcept).
idx_token = _index_table(
    "idx_token",
    Column("system", String(512), nullable=True),
    Column("code", String(512), nullable=True),
    Column("text_norm", String(512), nullable=True),  # display/text for :text
    Column("type_system", String(256), nullable=True),  # Identifier.type coding, for :of-type
    Column("type_code", String(64), nullable=True),
    indexes=[("code", "system"), ("system",)],
)

# date: every value is a UTC range [low, high) derived from its precision.
idx_date = _index_table(
    "idx_date",
    Column("low", DateTime(timezone=True), nullable=True),  # NULL = open start
    Column("high", DateTime(timezone=True), nullable=True),  # NULL = open end
    indexes=[("low",), ("high",)],
    include=("low", "high"),
)

# number: a value with its implicit precision range.
idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=[("value",)],
)

# quantity: as sent, plus UCUM canonical form where known.
idx_quantity = _index_table(
    "idx_quantity",
    Column("system", String(256), nullable=True),
    Column("code", String(64), nullable=True),
    Column("unit", String(64), nullable=True),
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("canon_code", String(64), nullable=True),
    Column("canon_value", Float, nullable=True),
    indexes=[("code", "value"), ("canon_code", "canon_value")],
)

idx_uri = _index_table(
    "idx_uri",
    Column("uri", String(1024), nullable=False),
    indexes=[("uri",)],
)

# reference: local references as (target_type, target_id); absolute/other as url.
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", String(1024), nullable=True),
    Column("ident_system", String(512), nullable=True),  # Reference.identifier for :identifier
    Column("ident_value", String(512), nullable=True),
    indexes=[("target_id", "target_type"), ("url",), ("ident_value",)],
)

# composite: each component's normalised value joined, one row per combination.
idx_composite = _index_table(
    "idx_composite",
    Column("components", Text, nullable=False),  # JSON list of per-component index dicts
    indexes=[],
)

INDEX_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "reference": idx_reference,
    "composite": idx_composite,
}

# Durable background jobs ($export, $reindex, HL7 outbox delivery, ...).
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),  # queued, running, done, failed, cancelled
    Column("params", Text, nullable=False),  # JSON
    Column("cursor", Text, nullable=True),  # JSON, resumable position
    Column("progress", Text, nullable=True),
    Column("result", Text, nullable=True),  # JSON
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(64), nullable=True),
)
Index("ix_jobs_kind_state", jobs.c.kind, jobs.c.state)

job_files = Table(
    "job_files",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("res_type", String(64), nullable=True),
    Column("count", Integer, nullable=False, default=0),
    Column("path", Text, nullable=False),
)

# HL7 v2: every inbound message stored raw before it is applied.
hl7_inbound = Table(
    "hl7_inbound",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("received", DateTime(timezone=True), nullable=False),
    Column("sender", String(256), nullable=False),
    Column("control_id", String(64), nullable=False),
    Column("message_type", String(32), nullable=True),
    Column("raw", Text, nullable=False),
    Column("status", String(16), nullable=False),  # received, applied, error, rejected
    Column("ack_code", String(4), nullable=True),
    Column("ack", Text, nullable=True),
    Column("error", Text, nullable=True),
)
Index("ix_hl7_inbound_sender_ctrl", hl7_inbound.c.sender, hl7_inbound.c.control_id)

# HL7 v2: durable outbox, delivered in order per appointment with back-off.
hl7_outbox = Table(
    "hl7_outbox",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("destination", String(256), nullable=False),
    Column("ordering_key", String(128), nullable=False),  # e.g. Appointment/123
    Column("message", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending, sent, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", DateTime(timezone=True), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("sent", DateTime(timezone=True), nullable=True),
)
Index("ix_hl7_outbox_status_next", hl7_outbox.c.status, hl7_outbox.c.next_attempt)

# Bulk load bookkeeping: what `fhir-server load` has finished, so re-runs skip it.
load_progress = Table(
    "load_progress",
    metadata,
    Column("content_hash", String(64), primary_key=True),  # sha256 of the file's bytes
    Column("path", Text, nullable=False),
    Column("units_done", Integer, nullable=False, default=0),  # NDJSON lines or 1 for a bundle
    Column("done", Boolean, nullable=False, default=False),
    Column("updated", DateTime(timezone=True), nullable=False),
)

# Custom SearchParameters posted by clients: pending (indexed on write, not yet
# searchable) until a $reindex job has indexed the existing data, then active.
custom_search_params = Table(
    "custom_search_params",
    metadata,
    Column("url", String(512), primary_key=True),
    Column("res_id", String(64), nullable=False),  # the SearchParameter resource
    Column("definition", Text, nullable=False),  # JSON: code, type, base, expression, target
    Column("state", String(16), nullable=False),  # pending | active
    Column("updated", DateTime(timezone=True), nullable=False),
)

# Change feed (registry pulls): one row per written version of the feed's types,
# numbered in commit order. txid is the writing PostgreSQL transaction
# (pg_current_xact_id; 0 on SQLite, whose writers commit one at a time), so a
# reader can stop below the oldest transaction still in flight.
change_feed = Table(
    "change_feed",
    metadata,
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("txid", BigInteger, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
)
Index("ix_change_feed_txid_seq", change_feed.c.txid, change_feed.c.seq)

# Per-case consent (security/case_grants.py): one row per case that a provision of an
# `active` Consent permits or denies sharing, with the provision's effective period
# (its own and its ancestors', intersected). Kept by a change subscriber in the Consent's
# write transaction; the period is compared with the request's instant in the query, so
# a revocation (a write) or an expiry (time) takes effect on the next request.
case_consent_grants = Table(
    "case_consent_grants",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("consent_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("case_type", String(64), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # permit | deny
    Column("starts", DateTime(timezone=True), nullable=True),
    Column("ends", DateTime(timezone=True), nullable=True),  # exclusive
)
Index("ix_case_consent_grants_case", case_consent_grants.c.case_id, case_consent_grants.c.case_type, case_consent_grants.c.patient_id)
Index("ix_case_consent_grants_consent", case_consent_grants.c.consent_id)

# The access log (audit/log.py): one row per AuditEvent with the columns its searches filter
# on, and the event itself as a compact document (an API event's facts, or the resource an
# audit source sent), rendered as the AuditEvent when read. An event's references and
# identifiers (agent.who, entity.what) are rows of audit_log_refs, `roles` saying where each
# occurs (audit.log.ROLE_*). Storing an event costs a few rows instead of a resource, a
# version and ~25 search-index rows (docs/audit.md).
audit_log = Table(
    "audit_log",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False),
    Column("recorded", DateTime(timezone=True), nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("type_system", String(256), nullable=True),
    Column("type_code", String(64), nullable=True),
    Column("subtype_system", String(256), nullable=True),  # the first subtype (more: audit_log_refs)
    Column("subtype_code", String(64), nullable=True),
    Column("action", String(1), nullable=True),
    Column("outcome", String(2), nullable=True),
    Column("doc", LargeBinary, nullable=False),  # JSON: [facts row, []], {"f": AuditFacts} (older) or {"r": AuditEvent}
    UniqueConstraint("id", name="uq_audit_log_id"),
)
Index("ix_audit_log_recorded", audit_log.c.recorded, audit_log.c.pk)

audit_log_refs = Table(
    "audit_log_refs",
    metadata,
    Column("event_pk", PK, primary_key=True),
    Column("value", String(512), primary_key=True),  # Type/id, or an identifier's value, or system|code
    Column("roles", Integer, nullable=False),  # bits: audit.log.ROLE_*
    sqlite_with_rowid=False,
)
Index("ix_audit_log_refs_value", audit_log_refs.c.value, audit_log_refs.c.event_pk, audit_log_refs.c.roles)

# Booking (fhir_server/workflows/booking): one row per seat of a Slot that an
# active Appointment holds. The primary key (slot_id, seat) is the database's
# guarantee that a seat is never booked twice, under any concurrency, whatever
# path the Appointment came by (REST, transaction, HL7 v2 SIU, $book).
booking_slot_claims = Table(
    "booking_slot_claims",
    metadata,
    Column("slot_id", String(64), primary_key=True),
    Column("seat", Integer, primary_key=True),  # 0 .. capacity-1
    Column("appointment_id", String(64), nullable=False),
    Column("hold_until", DateTime(timezone=True), nullable=True),  # set while a `proposed` hold
    Column("created", DateTime(timezone=True), nullable=False),
)
Index("ix_booking_slot_claims_appointment", booking_slot_claims.c.appointment_id)

# Booking: one row per Slot, kept by a change subscriber in the Slot's write
# transaction, so that Appointment/$find is one range scan over an index on
# (schedule, start) or (status, start) however many Slots there are. `codes`
# holds " sp:system|code st:system|code vt:system|code " (specialty, service
# type, visit type) for the optional filters.
booking_slots = Table(
    "booking_slots",
    metadata,
    Column("slot_id", String(64), primary_key=True),
    Column("schedule_id", String(64), nullable=True),
    Column("start", DateTime(timezone=True), nullable=True),
    Column("status", String(24), nullable=False),
    Column("codes", Text, nullable=False),
)
Index("ix_booking_slots_schedule_start", booking_slots.c.schedule_id, booking_slots.c.status, booking_slots.c.start, booking_slots.c.slot_id)
Index("ix_booking_slots_status_start", booking_slots.c.status, booking_slots.c.start, booking_slots.c.slot_id)

# Notifications (fhir_server/notify): one row per (CommunicationRequest, channel),
# the idempotency key that keeps a message from being sent twice.
notify_deliveries = Table(
    "notify_deliveries",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),  # CommunicationRequest id
    Column("channel", String(16), nullable=False),  # email | sms
    Column("address", String(512), nullable=True),
    Column("state", String(16), nullable=False),  # waiting | sending | sent | not-done | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("message_id", String(256), nullable=True),  # the gateway's / SMTP Message-ID
    Column("communication_id", String(64), nullable=True),
    Column("error", Text, nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    UniqueConstraint("request_id", "channel", name="uq_notify_deliveries_request_channel"),
)
Index("ix_notify_deliveries_state", notify_deliveries.c.state)
# The built-in authorization server (fhir_server/auth): signing keys, registered
# clients, and the grants it must remember (authorization codes, refresh tokens,
# revoked access tokens, client-assertion jti values against replay).
auth_keys = Table(
    "auth_keys",
    metadata,
    Column("kid", String(128), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("retired", DateTime(timezone=True), nullable=True),  # no longer signs; still verifies until its tokens expire
)

auth_clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(256), primary_key=True),
    Column("metadata", Text, nullable=False),  # JSON: redirect_uris, scope, jwks / jwks_uri, token_endpoint_auth_method, ...
    Column("created", DateTime(timezone=True), nullable=False),
)

auth_grants = Table(
    "auth_grants",
    metadata,
    Column("handle", String(128), primary_key=True),  # SHA-256 of the code / token / jti (never the secret itself)
    Column("kind", String(16), nullable=False),  # code | refresh | revoked | jti
    Column("client_id", String(256), nullable=False),
    Column("data", Text, nullable=False),  # JSON
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)
Index("ix_auth_grants_expires", auth_grants.c.expires)
