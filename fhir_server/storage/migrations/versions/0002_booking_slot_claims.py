"""booking: slot claims (one active booking per slot seat) and the $find slot index

Revision ID: 0002_booking_slot_claims
Revises: 0016_change_feed
"""
from alembic import op
import sqlalchemy as sa


revision = "0002_booking_slot_claims"
down_revision = "0016_change_feed"
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
    op.create_table(
        "booking_slots",
        sa.Column("slot_id", sa.String(length=64), nullable=False),
        sa.Column("schedule_id", sa.String(length=64), nullable=True),
        sa.Column("start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("codes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("slot_id", name="pk_booking_slots"),
    )
    op.create_index("ix_booking_slots_schedule_start", "booking_slots", ["schedule_id", "status", "start", "slot_id"])
    op.create_index("ix_booking_slots_status_start", "booking_slots", ["status", "start", "slot_id"])
    _backfill()


def _backfill() -> None:
    """Index the Slots stored before this revision (the subscriber keeps it from then on)."""
    from fhir_server.workflows.booking.slot_index import row_for

    bind = op.get_bind()
    res = sa.table("resources", sa.column("res_type"), sa.column("res_id"), sa.column("deleted"), sa.column("content"))
    slots = sa.table("booking_slots", sa.column("slot_id"), sa.column("schedule_id"), sa.column("start"),
                     sa.column("status"), sa.column("codes"))
    q = sa.select(res.c.res_id, res.c.content).where(res.c.res_type == "Slot", res.c.deleted == sa.false())
    batch = []
    for res_id, content in bind.execute(q):
        import json

        batch.append(row_for(res_id, json.loads(bytes(content))))
        if len(batch) >= 1000:
            bind.execute(slots.insert(), batch)
            batch = []
    if batch:
        bind.execute(slots.insert(), batch)


def downgrade() -> None:
    op.drop_index("ix_booking_slots_status_start", table_name="booking_slots")
    op.drop_index("ix_booking_slots_schedule_start", table_name="booking_slots")
    op.drop_table("booking_slots")
    op.drop_index("ix_booking_slot_claims_appointment", table_name="booking_slot_claims")
    op.drop_table("booking_slot_claims")
