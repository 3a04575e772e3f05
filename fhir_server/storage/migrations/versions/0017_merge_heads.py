"""Merge point: 0002_subscriptions and 0016_change_feed both follow 0001.

Main carried the two as separate heads, so `upgrade head` failed ("Multiple
head revisions"); this empty revision joins them. If main gains its own merge
revision, keep one of the two.

Revision ID: 0017_merge_heads
Revises: 0002_subscriptions, 0016_change_feed
"""

revision = "0017_merge_heads"
down_revision = ("0002_subscriptions", "0016_change_feed")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
