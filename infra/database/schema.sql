-- SpeechFlow database schema (PostgreSQL). Generated from the Alembic migrations (migrations/) with
-- `make schema`; tests/integration/core/test_schema.py checks that it equals what the migrations create.
-- Applying it leaves the database at Alembic head, so later migrations apply on top.

BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE jobs (
    id UUID NOT NULL,
    audio_filename VARCHAR(255) NOT NULL,
    workflow_type VARCHAR(50) NOT NULL,
    source_language VARCHAR(10),
    target_language VARCHAR(10) DEFAULT 'en',
    callback_url TEXT,
    status VARCHAR(20) DEFAULT 'pending_upload' NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    audio_blob_path TEXT,
    source_job_id UUID,
    detected_language VARCHAR(10),
    language_confidence FLOAT,
    audio_duration_seconds FLOAT,
    error_message TEXT,
    completed_at TIMESTAMP WITH TIME ZONE,
    api_key_id VARCHAR(64),
    CONSTRAINT pk_jobs PRIMARY KEY (id)
);

CREATE INDEX idx_jobs_created_at ON jobs (created_at);

CREATE INDEX idx_jobs_status ON jobs (status);

CREATE TABLE outbox (
    id BIGSERIAL NOT NULL,
    queue VARCHAR(100) NOT NULL,
    message_id VARCHAR(200) NOT NULL,
    body TEXT NOT NULL,
    properties JSON,
    scheduled_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    sent_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT pk_outbox PRIMARY KEY (id)
);

CREATE INDEX idx_outbox_unsent ON outbox (sent_at, id);

CREATE TABLE queue_messages (
    id BIGSERIAL NOT NULL,
    queue VARCHAR(100) NOT NULL,
    message_id VARCHAR(200) NOT NULL,
    body TEXT NOT NULL,
    properties JSON,
    state VARCHAR(12) DEFAULT 'active' NOT NULL,
    enqueued_ms BIGINT NOT NULL,
    visible_ms BIGINT NOT NULL,
    locked_until_ms BIGINT,
    lock_token VARCHAR(36),
    delivery_count INTEGER DEFAULT '0' NOT NULL,
    dead_letter_reason TEXT,
    dead_letter_description TEXT,
    settled_ms BIGINT,
    CONSTRAINT pk_queue_messages PRIMARY KEY (id),
    CONSTRAINT uq_queue_messages_queue_message_id UNIQUE (queue, message_id)
);

CREATE INDEX idx_queue_messages_ready ON queue_messages (queue, state, visible_ms);

CREATE TABLE processing_steps (
    id UUID NOT NULL,
    job_id UUID NOT NULL,
    step_type VARCHAR(50) NOT NULL,
    status VARCHAR(20) DEFAULT 'pending' NOT NULL,
    worker_id VARCHAR(100),
    started_at TIMESTAMP WITH TIME ZONE,
    completed_at TIMESTAMP WITH TIME ZONE,
    result_blob_path TEXT,
    error_message TEXT,
    retry_count INTEGER DEFAULT '0' NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    attempt INTEGER DEFAULT '0' NOT NULL,
    lease_expires_at TIMESTAMP WITH TIME ZONE,
    retryable BOOLEAN DEFAULT (true) NOT NULL,
    progress FLOAT,
    details JSON,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT pk_processing_steps PRIMARY KEY (id),
    CONSTRAINT fk_processing_steps_job_id_jobs FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE,
    CONSTRAINT uq_processing_steps_job_id_step_type UNIQUE (job_id, step_type)
);

CREATE INDEX idx_steps_job_id ON processing_steps (job_id);

CREATE INDEX idx_steps_status ON processing_steps (status);

INSERT INTO alembic_version (version_num) VALUES ('0001');

-- Running upgrade 0001 -> 0002

CREATE TABLE webhook_deliveries (
    id UUID NOT NULL,
    job_id UUID NOT NULL,
    url TEXT NOT NULL,
    event_type VARCHAR(50) NOT NULL,
    payload JSON NOT NULL,
    status VARCHAR(12) DEFAULT 'pending' NOT NULL,
    attempts INTEGER DEFAULT '0' NOT NULL,
    next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL,
    locked_until TIMESTAMP WITH TIME ZONE,
    last_status_code INTEGER,
    last_error TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT pk_webhook_deliveries PRIMARY KEY (id),
    CONSTRAINT fk_webhook_deliveries_job_id_jobs FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);

CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

CREATE INDEX idx_webhook_deliveries_job_id ON webhook_deliveries (job_id);

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

-- Running upgrade 0002 -> 0003

CREATE TABLE api_keys (
    id VARCHAR(64) NOT NULL,
    name VARCHAR(100) NOT NULL,
    key_hash VARCHAR(64) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT pk_api_keys PRIMARY KEY (id)
);

CREATE INDEX idx_jobs_api_key_id ON jobs (api_key_id, created_at);

UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002';

-- Running upgrade 0003 -> 0004

CREATE TABLE rate_limit_buckets (
    key VARCHAR(64) NOT NULL,
    tokens FLOAT NOT NULL,
    refilled_at TIMESTAMP WITH TIME ZONE NOT NULL,
    CONSTRAINT pk_rate_limit_buckets PRIMARY KEY (key)
);

UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003';

-- Running upgrade 0004 -> 0005

ALTER TABLE jobs ADD COLUMN options JSON;

UPDATE alembic_version SET version_num='0005' WHERE alembic_version.version_num = '0004';

-- Running upgrade 0005 -> 0006

ALTER TABLE jobs ADD COLUMN purge_requested_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE jobs ADD COLUMN purged_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE jobs ADD COLUMN audio_deleted_at TIMESTAMP WITH TIME ZONE;

CREATE INDEX idx_jobs_purge_pending ON jobs (purge_requested_at, purged_at);

UPDATE alembic_version SET version_num='0006' WHERE alembic_version.version_num = '0005';

-- Running upgrade 0006 -> 0007

CREATE TABLE batches (
    id UUID NOT NULL,
    api_key_id VARCHAR(64),
    workflow_type VARCHAR(50) NOT NULL,
    callback_url TEXT,
    item_count INTEGER NOT NULL,
    source VARCHAR(12) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    cancel_requested_at TIMESTAMP WITH TIME ZONE,
    completed_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT pk_batches PRIMARY KEY (id)
);

CREATE INDEX idx_batches_api_key_id ON batches (api_key_id, created_at);

CREATE INDEX idx_batches_completed_at ON batches (completed_at);

ALTER TABLE jobs ADD COLUMN batch_id UUID;

CREATE INDEX idx_jobs_batch_id ON jobs (batch_id, status);

ALTER TABLE jobs ADD CONSTRAINT fk_jobs_batch_id_batches FOREIGN KEY(batch_id) REFERENCES batches (id);

ALTER TABLE webhook_deliveries ADD COLUMN batch_id UUID;

ALTER TABLE webhook_deliveries ALTER COLUMN job_id DROP NOT NULL;

CREATE INDEX idx_webhook_deliveries_batch_id ON webhook_deliveries (batch_id);

ALTER TABLE webhook_deliveries ADD CONSTRAINT fk_webhook_deliveries_batch_id_batches FOREIGN KEY(batch_id) REFERENCES batches (id);

UPDATE alembic_version SET version_num='0007' WHERE alembic_version.version_num = '0006';

-- Running upgrade 0007 -> 0008

CREATE TABLE speakers (
    id UUID NOT NULL,
    api_key_id VARCHAR(64),
    name VARCHAR(100) NOT NULL,
    status VARCHAR(12) DEFAULT 'pending' NOT NULL,
    embedding JSON,
    audio_seconds FLOAT,
    error_message TEXT,
    enroll_job_id UUID,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT pk_speakers PRIMARY KEY (id)
);

CREATE INDEX idx_speakers_api_key_id ON speakers (api_key_id, created_at);

CREATE INDEX idx_speakers_created_at ON speakers (created_at);

UPDATE alembic_version SET version_num='0008' WHERE alembic_version.version_num = '0007';

COMMIT;
