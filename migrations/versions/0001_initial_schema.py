"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 07:44:33.230563
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('audio_filename', sa.String(length=255), nullable=False),
    sa.Column('workflow_type', sa.String(length=50), nullable=False),
    sa.Column('source_language', sa.String(length=10), nullable=True),
    sa.Column('target_language', sa.String(length=10), server_default='en', nullable=True),
    sa.Column('callback_url', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), server_default='pending_upload', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('audio_blob_path', sa.Text(), nullable=True),
    sa.Column('source_job_id', sa.Uuid(), nullable=True),
    sa.Column('detected_language', sa.String(length=10), nullable=True),
    sa.Column('language_confidence', sa.Float(), nullable=True),
    sa.Column('audio_duration_seconds', sa.Float(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('api_key_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('idx_jobs_created_at', ['created_at'], unique=False)
        batch_op.create_index('idx_jobs_status', ['status'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('idx_outbox_unsent', ['sent_at', 'id'], unique=False)

    op.create_table('queue_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=True),
    sa.Column('state', sa.String(length=12), server_default='active', nullable=False),
    sa.Column('enqueued_ms', sa.BigInteger(), nullable=False),
    sa.Column('visible_ms', sa.BigInteger(), nullable=False),
    sa.Column('locked_until_ms', sa.BigInteger(), nullable=True),
    sa.Column('lock_token', sa.String(length=36), nullable=True),
    sa.Column('delivery_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('dead_letter_reason', sa.Text(), nullable=True),
    sa.Column('dead_letter_description', sa.Text(), nullable=True),
    sa.Column('settled_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_queue_messages')),
    sa.UniqueConstraint('queue', 'message_id', name=op.f('uq_queue_messages_queue_message_id'))
    )
    with op.batch_alter_table('queue_messages', schema=None) as batch_op:
        batch_op.create_index('idx_queue_messages_ready', ['queue', 'state', 'visible_ms'], unique=False)

    op.create_table('processing_steps',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('step_type', sa.String(length=50), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('worker_id', sa.String(length=100), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result_blob_path', sa.Text(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('retry_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('attempt', sa.Integer(), server_default='0', nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retryable', sa.Boolean(), server_default=sa.text('(true)'), nullable=False),
    sa.Column('progress', sa.Float(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_processing_steps_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_processing_steps')),
    sa.UniqueConstraint('job_id', 'step_type', name=op.f('uq_processing_steps_job_id_step_type'))
    )
    with op.batch_alter_table('processing_steps', schema=None) as batch_op:
        batch_op.create_index('idx_steps_job_id', ['job_id'], unique=False)
        batch_op.create_index('idx_steps_status', ['status'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('processing_steps', schema=None) as batch_op:
        batch_op.drop_index('idx_steps_status')
        batch_op.drop_index('idx_steps_job_id')

    op.drop_table('processing_steps')
    with op.batch_alter_table('queue_messages', schema=None) as batch_op:
        batch_op.drop_index('idx_queue_messages_ready')

    op.drop_table('queue_messages')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('idx_outbox_unsent')

    op.drop_table('outbox')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('idx_jobs_status')
        batch_op.drop_index('idx_jobs_created_at')

    op.drop_table('jobs')

