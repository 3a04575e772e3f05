"""per-case consent: the case_consent_grants table (filled from the stored Consents) and
an index on Reference.identifier (Consent?actor:identifier= for Patient/$proxies)

Revision ID: 0017_case_consent_grants
Revises: 0002_auth
"""
from alembic import op
import sqlalchemy as sa


revision = "0017_case_consent_grants"
down_revision = "0002_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_consent_grants",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("case_type", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("starts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_consent_grants_case", "case_consent_grants", ["case_id", "case_type", "patient_id"])
    op.create_index("ix_case_consent_grants_consent", "case_consent_grants", ["consent_id"])
    op.create_index("ix_idx_reference_ident_value", "idx_reference", ["res_type", "param", "ident_value"])
    _backfill()


def _backfill() -> None:
    """The rows of the Consents stored before this revision (the subscriber keeps them from then on)."""
    from fhir_server.model import jsonio
    from fhir_server.security.case_grants import rows_for

    bind = op.get_bind()
    res = sa.table("resources", sa.column("res_type"), sa.column("res_id"), sa.column("deleted"), sa.column("content"))
    table = sa.table("case_consent_grants", *(sa.column(c) for c in
                     ("consent_id", "patient_id", "case_type", "case_id", "kind", "starts", "ends")))
    q = sa.select(res.c.res_id, res.c.content).where(res.c.res_type == "Consent", res.c.deleted == sa.false())
    batch: list[dict] = []
    for res_id, content in bind.execute(q):
        if content is None:
            continue
        try:
            doc = jsonio.parse_plain(bytes(content))
        except ValueError:
            continue
        batch.extend(rows_for(res_id, doc if isinstance(doc, dict) else None))
        if len(batch) >= 1000:
            bind.execute(table.insert(), batch)
            batch = []
    if batch:
        bind.execute(table.insert(), batch)


def downgrade() -> None:
    op.drop_index("ix_idx_reference_ident_value", table_name="idx_reference")
    op.drop_index("ix_case_consent_grants_consent", table_name="case_consent_grants")
    op.drop_index("ix_case_consent_grants_case", table_name="case_consent_grants")
    op.drop_table("case_consent_grants")
