"""Statuses the schema enforces, one meaning per word: a credited block is
``credited`` (it was ``confirmed``, which elsewhere means "in the main
chain"); ``blocks.status`` and ``payments.status`` get CHECK constraints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# the values as of this revision (not imported from the models, which may change later)
BLOCK = ("pending", "credited", "orphaned")
PAYMENT = ("intent", "signed", "sent", "confirmed", "failed", "abandoned")


def _in(values) -> str:
    return "status IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    op.execute("UPDATE blocks SET status = 'credited' WHERE status = 'confirmed'")
    with op.batch_alter_table('blocks') as batch:
        batch.create_check_constraint(op.f('ck_blocks_status'), _in(BLOCK))
    with op.batch_alter_table('payments') as batch:
        batch.create_check_constraint(op.f('ck_payments_status'), _in(PAYMENT))


def downgrade() -> None:
    with op.batch_alter_table('payments') as batch:
        batch.drop_constraint(op.f('ck_payments_status'), type_='check')
    with op.batch_alter_table('blocks') as batch:
        batch.drop_constraint(op.f('ck_blocks_status'), type_='check')
    op.execute("UPDATE blocks SET status = 'confirmed' WHERE status = 'credited'")
