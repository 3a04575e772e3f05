"""booking: slot claims (one active booking per slot seat)

Revision ID: 0002_booking_slot_claims
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = "0002_booking_slot_claims"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "booking_slot_claims",
        sa.Column("slot_id", sa.String(length=64), nullable=False),
        sa.Column("seat", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.String(length=64), nullable=False),
        sa.Column("hold_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slot_id", "seat", name="pk_booking_slot_claims"),
    )
    op.create_index("ix_booking_slot_claims_appointment", "booking_slot_claims", ["appointment_id"])


def downgrade() -> None:
    op.drop_index("ix_booking_slot_claims_appointment", table_name="booking_slot_claims")
    op.drop_table("booking_slot_claims")
