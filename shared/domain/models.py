"""SQLAlchemy 2 models: the seed's `jobs` and `processing_steps` (every column kept) plus what the
design adds, the SQL queue's `queue_messages`, the `outbox` the Service Bus relay publishes from, and
the `batches` that group jobs submitted together.

Alembic migrations (migrations/) create exactly this schema; infra/database/schema.sql is kept equal
to what they create on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE on PostgreSQL; on SQLite a naive UTC string read back as aware UTC,
    so that comparisons in SQL (lease expiry) and in Python agree on both databases."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Job(Base):
    __tablename__ = "jobs"

    # seed §7
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    audio_filename: Mapped[str] = mapped_column(String(255))
    workflow_type: Mapped[str] = mapped_column(String(50))
    source_language: Mapped[str | None] = mapped_column(String(10))
    target_language: Mapped[str | None] = mapped_column(String(10), default="en", server_default="en")
    callback_url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending_upload", server_default="pending_upload")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
    # additions
    audio_blob_path: Mapped[str | None] = mapped_column(Text)
    """Blob (in the audio container) the client uploads to: audio, or a transcript for text workflows."""
    source_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """translate_only / summarize_only: the job whose transcript is reused."""
    detected_language: Mapped[str | None] = mapped_column(String(10))
    language_confidence: Mapped[float | None] = mapped_column(Float)
    audio_duration_seconds: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None] = mapped_column()
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What the client asked for beyond the workflow (speaker labels, channels, vocabulary, …)."""
    purge_requested_at: Mapped[datetime | None] = mapped_column()
    """When deleting the job's data was asked for (DELETE, or its retention ran out): the purge's
    recorded intent, retried until `purged_at` is set (shared/jobs/retention.py)."""
    purged_at: Mapped[datetime | None] = mapped_column()
    """When its audio, results and text were deleted; the row stays as a tombstone."""
    audio_deleted_at: Mapped[datetime | None] = mapped_column()
    """When its uploaded audio was deleted (AUDIO_RETENTION_SECONDS after the job ended, or a purge)."""
    batch_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("batches.id"))
    """The batch the job is an item of (POST /batches), if any."""

    steps: Mapped[list[ProcessingStep]] = relationship(
        back_populates="job", order_by="ProcessingStep.created_at", cascade="all, delete-orphan"
    )
    webhook_deliveries: Mapped[list[WebhookDelivery]] = relationship(
        order_by="WebhookDelivery.created_at", viewonly=True
    )

    __table_args__ = (
        Index("idx_jobs_status", "status"),
        Index("idx_jobs_created_at", "created_at"),
        Index("idx_jobs_api_key_id", "api_key_id", "created_at"),
        Index("idx_jobs_purge_pending", "purge_requested_at", "purged_at"),
        Index("idx_jobs_batch_id", "batch_id", "status"),
    )


class ProcessingStep(Base):
    __tablename__ = "processing_steps"

    # seed §7
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    step_type: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    worker_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    result_blob_path: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    # additions
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Number of times a worker has claimed this step; the fencing token of the current claim."""
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    retryable: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    """False when the last failure was permanent (bad audio, content filter): never retried."""
    progress: Mapped[float | None] = mapped_column(Float)
    """Fraction of the work done, 0..1, while processing."""
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What the step recorded: model, device, durations, token usage, why it was skipped, …"""
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )

    job: Mapped[Job] = relationship(back_populates="steps")

    __table_args__ = (
        UniqueConstraint("job_id", "step_type"),
        Index("idx_steps_job_id", "job_id"),
        Index("idx_steps_status", "status"),
    )


class QueueMessage(Base):
    """The SQL queue: one row a message, with Service Bus peek-lock semantics. Times are epoch
    milliseconds so that SQLite and PostgreSQL compare them the same way."""

    __tablename__ = "queue_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(100))
    message_id: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(12), default="active", server_default="active")
    """active → done (completed; kept for duplicate detection) or dead (the dead-letter sub-queue)."""
    enqueued_ms: Mapped[int] = mapped_column(BigInteger)
    visible_ms: Mapped[int] = mapped_column(BigInteger)
    """Scheduled delivery: not delivered before this time."""
    locked_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    lock_token: Mapped[str | None] = mapped_column(String(36))
    delivery_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    dead_letter_reason: Mapped[str | None] = mapped_column(Text)
    dead_letter_description: Mapped[str | None] = mapped_column(Text)
    settled_ms: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("queue", "message_id"),
        Index("idx_queue_messages_ready", "queue", "state", "visible_ms"),
    )


class OutboxMessage(Base):
    """Messages committed with the state change that caused them, published to Service Bus by the
    relay (docs/ARCHITECTURE.md, rule 1). Unused on the SQL queue, where the queue table is the outbox."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(100))
    message_id: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    scheduled_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    sent_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (Index("idx_outbox_unsent", "sent_at", "id"),)


class WebhookDelivery(Base):
    """A callback to deliver, committed with the job's terminal status (the outbox for webhooks) and
    retried with backoff until delivered, refused (4xx) or out of attempts."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    """Also the Standard Webhooks `webhook-id`: the same for every attempt, so receivers can dedupe."""
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    """The job whose end this reports; null for a batch's `batch.completed`."""
    batch_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("batches.id"))
    """The batch whose end this reports (`batch.completed`); null for a job's webhook."""
    url: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), default="pending", server_default="pending")
    """pending → delivered, or failed (refused, or out of attempts)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    delivered_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        Index("idx_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("idx_webhook_deliveries_job_id", "job_id"),
        Index("idx_webhook_deliveries_batch_id", "batch_id"),
    )


class Batch(Base):
    """Jobs submitted together (POST /batches): each item is an ordinary job of the key with `batch_id`
    set. The batch ends when every one of its jobs has; `completed_at` is set, and its `batch.completed`
    webhook staged, in the transaction that sees the last one end (shared/jobs/batches.py)."""

    __tablename__ = "batches"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    """The key that created it (as `jobs.api_key_id`); every other key gets 404."""
    workflow_type: Mapped[str] = mapped_column(String(50))
    callback_url: Mapped[str | None] = mapped_column(Text)
    """Where `batch.completed` is sent; the items' jobs send no webhook of their own."""
    item_count: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(12))
    """`items` (listed in the request) or `container` (the audio blobs of a container_url)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    cancel_requested_at: Mapped[datetime | None] = mapped_column()
    """DELETE /batches/{id}: its jobs that had not ended were cancelled."""
    completed_at: Mapped[datetime | None] = mapped_column()
    """When every job of the batch had ended."""

    __table_args__ = (
        Index("idx_batches_api_key_id", "api_key_id", "created_at"),
        Index("idx_batches_completed_at", "completed_at"),
    )


class ApiKey(Base):
    """An API key (shared/jobs/keys.py). Only a SHA-256 digest of the key is kept; the key itself is shown
    once, when it is created. `jobs.api_key_id` names the key that created a job."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The key's public part (`sfk_<id>_…`), safe to show and log."""
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    revoked_at: Mapped[datetime | None] = mapped_column()


class RateLimitBucket(Base):
    """One API key's token bucket, shared by every API process on PostgreSQL (functions/api/security.py).
    Each request refills and takes a token in one INSERT … ON CONFLICT DO UPDATE, so concurrent requests
    from several replicas are serialised on the row and none of them is lost. Unused on SQLite."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The principal id (`jobs.api_key_id`): a key id, `bootstrap` or `entra:<object id>`."""
    tokens: Mapped[float] = mapped_column(Float)
    refilled_at: Mapped[datetime] = mapped_column()
    """When `tokens` was last computed, by the database's clock, so replicas' clocks do not matter."""


class Speaker(Base):
    """An enrolled voice of the voice library (shared/jobs/speakers.py): its name and its voiceprint, the
    CAM++ embedding of a clip of it. Only the embedding is kept (biometric data, docs/SECURITY.md): the
    clip is deleted once enrolled, and the row (embedding and all) on DELETE or after
    SPEAKER_RETENTION_SECONDS."""

    __tablename__ = "speakers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    """The key that enrolled it, its owner (as `jobs.api_key_id`)."""
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(12), default="pending", server_default="pending")
    """pending (its clip waits for the ENROLL step) → ready, or failed (`error_message` says why)."""
    embedding: Mapped[list[float] | None] = mapped_column(JSON)
    """The voiceprint (192 values); never shown by the API."""
    audio_seconds: Mapped[float | None] = mapped_column(Float)
    """Seconds of speech the clip held."""
    error_message: Mapped[str | None] = mapped_column(Text)
    enroll_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """The internal job whose ENROLL step computes the voiceprint (its clip is that job's audio)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )

    __table_args__ = (
        Index("idx_speakers_api_key_id", "api_key_id", "created_at"),
        Index("idx_speakers_created_at", "created_at"),
    )
