"""the access log as compact rows (audit_log, audit_log_refs) instead of stored AuditEvent resources

Stored AuditEvents move into the log as they are (rendered byte for byte as before), and the
read events still staged become log rows; their resource, version and index rows go, and
the staging table with them.

Revision ID: 0021_compact_access_log
Revises: 0020_covering_index_rows
"""
from datetime import datetime

from alembic import op
import orjson
import sqlalchemy as sa


revision = "0021_compact_access_log"
down_revision = "0020_covering_index_rows"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_PAGE = 1000


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("pk", _PK, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type_system", sa.String(256), nullable=True),
        sa.Column("type_code", sa.String(64), nullable=True),
        sa.Column("subtype_system", sa.String(256), nullable=True),
        sa.Column("subtype_code", sa.String(64), nullable=True),
        sa.Column("action", sa.String(1), nullable=True),
        sa.Column("outcome", sa.String(2), nullable=True),
        sa.Column("doc", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id", name="uq_audit_log_id"),
    )
    op.create_index("ix_audit_log_recorded", "audit_log", ["recorded", "pk"])
    op.create_table(
        "audit_log_refs",
        sa.Column("event_pk", _PK, nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.Column("roles", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("event_pk", "value"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_audit_log_refs_value", "audit_log_refs", ["value", "event_pk", "roles"])
    conn = op.get_bind()
    _move_stored_events(conn)
    _move_staged_rows(conn)
    op.drop_table("audit_staged")


def _move_stored_events(conn) -> None:
    """Stored AuditEvent resources become log rows (their JSON kept as it is served)."""
    from fhir_server.audit.log import entry_of_resource, insert
    from fhir_server.search.indexer import INDEX_TABLES
    from fhir_server.storage.repository import _utc
    from fhir_server.storage.schema import resource_versions, resources

    r = resources.c
    while True:
        rows = conn.execute(sa.select(r.pk, r.content, r.last_updated)
                            .where(r.res_type == "AuditEvent").order_by(r.pk).limit(_PAGE)).all()
        if not rows:
            return
        entries = []
        for pk, content, updated in rows:
            if content:
                entries.append(entry_of_resource(orjson.loads(bytes(content)), _utc(updated)))
        insert(conn, entries)
        pks = [row[0] for row in rows]
        for table in INDEX_TABLES.values():
            conn.execute(table.delete().where(table.c.res_pk.in_(pks)))
        conn.execute(resource_versions.delete().where(resource_versions.c.res_pk.in_(pks)))
        conn.execute(resources.delete().where(r.pk.in_(pks)))


def _move_staged_rows(conn) -> None:
    """Read events staged by the previous version (facts and lookups, one JSON row each)."""
    from fhir_server.audit.balp import FACT_FIELDS
    from fhir_server.audit.log import encode_row, insert
    from fhir_server.audit.writer import entries

    staged = sa.table("audit_staged", sa.column("pk"), sa.column("facts"))
    last = 0
    while True:
        rows = conn.execute(sa.select(staged.c.pk, staged.c.facts).where(staged.c.pk > last)
                            .order_by(staged.c.pk).limit(_PAGE)).all()
        if not rows:
            return
        batch = []
        for pk, raw in rows:
            last = pk
            try:  # the staged form: {"f": the facts as a dict, "l": lookup pairs}
                doc = orjson.loads(bytes(raw))
                facts = doc["f"]
                datetime.fromisoformat(facts["recorded"])
                row = [facts.get(k, [] if k in ("data", "patients") else None) for k in FACT_FIELDS]
                batch.append(encode_row(row, doc.get("l") or []))
            except (ValueError, TypeError, KeyError):
                continue  # a row no version can read: it never became an event either
        insert(conn, entries(conn, batch))


def downgrade() -> None:
    op.create_table(
        "audit_staged",
        sa.Column("pk", _PK, autoincrement=True, nullable=False),
        sa.Column("facts", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.drop_index("ix_audit_log_refs_value", table_name="audit_log_refs")
    op.drop_table("audit_log_refs")
    op.drop_index("ix_audit_log_recorded", table_name="audit_log")
    op.drop_table("audit_log")
