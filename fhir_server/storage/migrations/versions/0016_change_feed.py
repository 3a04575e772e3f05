"""change feed for registry pulls (issue 16)

Revision ID: 0016_change_feed
Revises: 0002_subscriptions
"""
from alembic import op
import sqlalchemy as sa


revision = '0016_change_feed'
down_revision = '0002_subscriptions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('change_feed',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('txid', sa.BigInteger(), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('change_feed', schema=None) as batch_op:
        batch_op.create_index('ix_change_feed_txid_seq', ['txid', 'seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('change_feed', schema=None) as batch_op:
        batch_op.drop_index('ix_change_feed_txid_seq')
    op.drop_table('change_feed')
