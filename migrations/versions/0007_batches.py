"""batches: jobs submitted together, and batch.completed webhooks

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'batches',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('api_key_id', sa.String(length=64), nullable=True),
        sa.Column('workflow_type', sa.String(length=50), nullable=False),
        sa.Column('callback_url', sa.Text(), nullable=True),
        sa.Column('item_count', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=12), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
        sa.Column('cancel_requested_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_batches')),
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('idx_batches_api_key_id', ['api_key_id', 'created_at'], unique=False)
        batch_op.create_index('idx_batches_completed_at', ['completed_at'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_id', sa.Uuid(), nullable=True))
        batch_op.create_index('idx_jobs_batch_id', ['batch_id', 'status'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_jobs_batch_id_batches'), 'batches', ['batch_id'], ['id'])

    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_id', sa.Uuid(), nullable=True))
        batch_op.alter_column('job_id', existing_type=sa.Uuid(), nullable=True)
        batch_op.create_index('idx_webhook_deliveries_batch_id', ['batch_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_webhook_deliveries_batch_id_batches'), 'batches', ['batch_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_webhook_deliveries_batch_id_batches'), type_='foreignkey')
        batch_op.drop_index('idx_webhook_deliveries_batch_id')
        batch_op.execute(sa.text('DELETE FROM webhook_deliveries WHERE job_id IS NULL'))
        batch_op.alter_column('job_id', existing_type=sa.Uuid(), nullable=False)
        batch_op.drop_column('batch_id')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_jobs_batch_id_batches'), type_='foreignkey')
        batch_op.drop_index('idx_jobs_batch_id')
        batch_op.drop_column('batch_id')

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('idx_batches_completed_at')
        batch_op.drop_index('idx_batches_api_key_id')

    op.drop_table('batches')
