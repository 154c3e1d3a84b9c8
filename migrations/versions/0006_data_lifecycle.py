"""data lifecycle: purge tombstones and deleted audio

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purge_requested_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('audio_deleted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('idx_jobs_purge_pending', ['purge_requested_at', 'purged_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('idx_jobs_purge_pending')
        batch_op.drop_column('audio_deleted_at')
        batch_op.drop_column('purged_at')
        batch_op.drop_column('purge_requested_at')
