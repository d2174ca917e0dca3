"""Initial ledger: blocks and their PPLNS windows, archived shares, credits,
balances, payments and their outputs, the audit trail, the single-instance lease.

Revision ID: 0001
Revises: 
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('balances',
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('owed', sa.BigInteger(), nullable=False),
    sa.Column('credited', sa.BigInteger(), nullable=False),
    sa.Column('paid', sa.BigInteger(), nullable=False),
    sa.Column('hold_reason', sa.Text(), nullable=True),
    sa.Column('hold_time', sa.Double(), nullable=True),
    sa.Column('updated', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('address', name=op.f('pk_balances'))
    )
    op.create_table('blocks',
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('reward', sa.BigInteger(), nullable=False),
    sa.Column('reward_source', sa.String(length=8), nullable=False),
    sa.Column('finder_address', sa.String(length=128), nullable=False),
    sa.Column('finder_worker', sa.String(length=128), nullable=False),
    sa.Column('found_time', sa.Double(), nullable=False),
    sa.Column('imported_time', sa.Double(), nullable=False),
    sa.Column('checked_time', sa.Double(), nullable=True),
    sa.Column('confirmations', sa.Integer(), nullable=True),
    sa.Column('credited_time', sa.Double(), nullable=True),
    sa.Column('orphan_count', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('log_from', sa.BigInteger(), nullable=False),
    sa.Column('floor_seq', sa.BigInteger(), nullable=False),
    sa.Column('first_seq', sa.BigInteger(), nullable=True),
    sa.Column('first_credit', sa.Double(), nullable=True),
    sa.Column('partial', sa.Boolean(), nullable=False),
    sa.Column('n_target', sa.Double(), nullable=False),
    sa.Column('window_total', sa.Double(), nullable=False),
    sa.Column('complete', sa.Boolean(), nullable=False),
    sa.Column('network_difficulty', sa.Double(), nullable=False),
    sa.Column('window_factor', sa.Double(), nullable=False),
    sa.Column('window_difficulty', sa.Double(), nullable=False),
    sa.Column('entry_shares', sa.Integer(), nullable=False),
    sa.Column('share_time', sa.Double(), nullable=False),
    sa.Column('snapshot_created', sa.Double(), nullable=False),
    sa.Column('fee_percent', sa.String(length=32), nullable=True),
    sa.Column('fee_sat', sa.BigInteger(), nullable=True),
    sa.Column('fee_address', sa.String(length=128), nullable=True),
    sa.Column('report_json', sa.Text(), nullable=True),
    sa.Column('report_digest', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('hash', name=op.f('pk_blocks'))
    )
    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_blocks_height'), ['height'], unique=False)
        batch_op.create_index(batch_op.f('ix_blocks_status'), ['status'], unique=False)

    op.create_table('lease',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('acquired', sa.Double(), nullable=False),
    sa.Column('expires', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_lease'))
    )
    op.create_table('ledger_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('time', sa.Double(), nullable=False),
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('delta', sa.BigInteger(), nullable=False),
    sa.Column('balance_after', sa.BigInteger(), nullable=False),
    sa.Column('block_hash', sa.String(length=64), nullable=True),
    sa.Column('payment_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries'))
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_entries_address'), ['address'], unique=False)

    op.create_table('payments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('fee_payer', sa.String(length=8), nullable=False),
    sa.Column('created', sa.Double(), nullable=False),
    sa.Column('updated', sa.Double(), nullable=False),
    sa.Column('txid', sa.String(length=64), nullable=True),
    sa.Column('raw_tx', sa.Text(), nullable=True),
    sa.Column('fee_sat', sa.BigInteger(), nullable=True),
    sa.Column('total_sat', sa.BigInteger(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('signed_time', sa.Double(), nullable=True),
    sa.Column('sent_time', sa.Double(), nullable=True),
    sa.Column('confirmed_time', sa.Double(), nullable=True),
    sa.Column('block_hash', sa.String(length=64), nullable=True),
    sa.Column('confirmations', sa.Integer(), nullable=True),
    sa.Column('broadcasts', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments')),
    sa.UniqueConstraint('txid', name=op.f('uq_payments_txid'))
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payments_status'), ['status'], unique=False)

    op.create_table('shares',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('worker', sa.String(length=128), nullable=False),
    sa.Column('difficulty', sa.Double(), nullable=False),
    sa.Column('share_difficulty', sa.Double(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('time', sa.Double(), nullable=False),
    sa.Column('is_block', sa.Boolean(), nullable=False),
    sa.Column('batch', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_shares'))
    )
    with op.batch_alter_table('shares', schema=None) as batch_op:
        batch_op.create_index('ix_shares_address_seq', ['address', 'seq'], unique=False)

    op.create_table('block_window',
    sa.Column('block_hash', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('difficulty', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['block_hash'], ['blocks.hash'], name=op.f('fk_block_window_block_hash_blocks')),
    sa.PrimaryKeyConstraint('block_hash', 'address', name=op.f('pk_block_window'))
    )
    with op.batch_alter_table('block_window', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_block_window_address'), ['address'], unique=False)

    op.create_table('credits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('block_hash', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('time', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['block_hash'], ['blocks.hash'], name=op.f('fk_credits_block_hash_blocks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credits')),
    sa.UniqueConstraint('block_hash', 'address', 'kind', name=op.f('uq_credits_block_hash_address_kind'))
    )
    with op.batch_alter_table('credits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_credits_address'), ['address'], unique=False)
        batch_op.create_index(batch_op.f('ix_credits_block_hash'), ['block_hash'], unique=False)

    op.create_table('payment_outputs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('owed', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=True),
    sa.Column('vout', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_payment_outputs_payment_id_payments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_outputs')),
    sa.UniqueConstraint('payment_id', 'address', name=op.f('uq_payment_outputs_payment_id_address'))
    )
    with op.batch_alter_table('payment_outputs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payment_outputs_address'), ['address'], unique=False)
        batch_op.create_index(batch_op.f('ix_payment_outputs_payment_id'), ['payment_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('payment_outputs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payment_outputs_payment_id'))
        batch_op.drop_index(batch_op.f('ix_payment_outputs_address'))

    op.drop_table('payment_outputs')
    with op.batch_alter_table('credits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_credits_block_hash'))
        batch_op.drop_index(batch_op.f('ix_credits_address'))

    op.drop_table('credits')
    with op.batch_alter_table('block_window', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_block_window_address'))

    op.drop_table('block_window')
    with op.batch_alter_table('shares', schema=None) as batch_op:
        batch_op.drop_index('ix_shares_address_seq')

    op.drop_table('shares')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payments_status'))

    op.drop_table('payments')
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_entries_address'))

    op.drop_table('ledger_entries')
    op.drop_table('lease')
    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_blocks_status'))
        batch_op.drop_index(batch_op.f('ix_blocks_height'))

    op.drop_table('blocks')
    op.drop_table('balances')
