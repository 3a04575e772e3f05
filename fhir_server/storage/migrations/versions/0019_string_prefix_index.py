"""PostgreSQL: idx_string.value_norm indexed in the "C" collation, for string "starts with"
searches written as a code-point range (search/prefix.py); other databases need nothing

Revision ID: 0019_string_prefix_index
Revises: 0018_audit_staged
"""
from alembic import op


revision = "0019_string_prefix_index"
down_revision = "0018_audit_staged"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('CREATE INDEX ix_idx_string_value_norm_c ON idx_string (res_type, param, value_norm COLLATE "C")')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_idx_string_value_norm_c")
