"""auth: signing keys, OAuth clients, grants (issue 12)

Revision ID: 0002_auth
Revises: 0003_notify_deliveries
"""
from alembic import op
import sqlalchemy as sa


revision = "0002_auth"
down_revision = "0003_notify_deliveries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_keys",
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "auth_clients",
        sa.Column("client_id", sa.String(length=256), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "auth_grants",
        sa.Column("handle", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=256), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("handle"),
    )
    op.create_index("ix_auth_grants_expires", "auth_grants", ["expires"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_auth_grants_expires", table_name="auth_grants")
    op.drop_table("auth_grants")
    op.drop_table("auth_clients")
    op.drop_table("auth_keys")
