"""notify: deliveries (one row per CommunicationRequest and channel)

Revision ID: 0003_notify_deliveries
Revises: 0002_booking_slot_claims
"""
from alembic import op
import sqlalchemy as sa


revision = "0003_notify_deliveries"
down_revision = "0002_booking_slot_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=512), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=256), nullable=True),
        sa.Column("communication_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "channel", name="uq_notify_deliveries_request_channel"),
    )
    op.create_index("ix_notify_deliveries_state", "notify_deliveries", ["state"])


def downgrade() -> None:
    op.drop_index("ix_notify_deliveries_state", table_name="notify_deliveries")
    op.drop_table("notify_deliveries")
