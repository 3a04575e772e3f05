"""subscriptions: delivery state, type index, outbox, websocket binding tokens

Revision ID: 0002_subscriptions
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0002_subscriptions'
down_revision = '0001'
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'subscriptions',
        sa.Column('id', sa.String(64), primary_key=True),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('kind', sa.String(8), nullable=False),
        sa.Column('channel_type', sa.String(16), nullable=False),
        sa.Column('spec', sa.Text(), nullable=False),
        sa.Column('owner', sa.Text(), nullable=True),
        sa.Column('events_since_start', sa.BigInteger(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('next_attempt', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('lease_owner', sa.String(64), nullable=True),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('heartbeat_seconds', sa.Integer(), nullable=True),
        sa.Column('last_sent', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'subscription_types',
        sa.Column('res_type', sa.String(64), primary_key=True),
        sa.Column('sub_id', sa.String(64), primary_key=True),
    )
    op.create_table(
        'subscription_events',
        sa.Column('id', PK, primary_key=True, autoincrement=True),
        sa.Column('sub_id', sa.String(64), nullable=False),
        sa.Column('event_number', sa.BigInteger(), nullable=False),
        sa.Column('kind', sa.String(24), nullable=False),
        sa.Column('topic', sa.String(512), nullable=True),
        sa.Column('res_type', sa.String(64), nullable=True),
        sa.Column('res_id', sa.String(64), nullable=True),
        sa.Column('version_id', sa.Integer(), nullable=True),
        sa.Column('method', sa.String(8), nullable=True),
        sa.Column('created', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('sent', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
    )
    op.create_index('ix_subscription_events_sub_status', 'subscription_events', ['sub_id', 'status', 'id'])
    op.create_index('ix_subscription_events_sub_number', 'subscription_events', ['sub_id', 'event_number'])
    op.create_table(
        'subscription_ws_tokens',
        sa.Column('digest', sa.String(64), primary_key=True),
        sa.Column('sub_ids', sa.Text(), nullable=False),
        sa.Column('expires', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('subscription_ws_tokens')
    op.drop_index('ix_subscription_events_sub_number', 'subscription_events')
    op.drop_index('ix_subscription_events_sub_status', 'subscription_events')
    op.drop_table('subscription_events')
    op.drop_table('subscription_types')
    op.drop_table('subscriptions')
