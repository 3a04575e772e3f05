"""the access log's staging table: read events' facts, one row each, until they become AuditEvents

Revision ID: 0018_audit_staged
Revises: 0017_case_consent_grants
"""
from alembic import op
import sqlalchemy as sa


revision = "0018_audit_staged"
down_revision = "0017_case_consent_grants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_staged",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("facts", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )


def downgrade() -> None:
    op.drop_table("audit_staged")
