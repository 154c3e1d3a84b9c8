"""voice library: enrolled speakers and their voiceprints

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'speakers',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('api_key_id', sa.String(length=64), nullable=True),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=12), server_default='pending', nullable=False),
        sa.Column('embedding', sa.JSON(), nullable=True),
        sa.Column('audio_seconds', sa.Float(), nullable=True),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.Column('enroll_job_id', sa.Uuid(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_speakers')),
    )
    with op.batch_alter_table('speakers', schema=None) as batch_op:
        batch_op.create_index('idx_speakers_api_key_id', ['api_key_id', 'created_at'], unique=False)
        batch_op.create_index('idx_speakers_created_at', ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('speakers', schema=None) as batch_op:
        batch_op.drop_index('idx_speakers_created_at')
        batch_op.drop_index('idx_speakers_api_key_id')
    op.drop_table('speakers')
