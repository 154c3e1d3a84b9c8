"""Deleting a job's data: the purge (DELETE /jobs/{id}, or the end of its retention) and the retention
pass that applies AUDIO_RETENTION_SECONDS, RESULT_RETENTION_SECONDS and a job's own `retention_seconds`,
and SPEAKER_RETENTION_SECONDS to the voice library (shared/jobs/speakers.py).

A purge is crash-safe because it is idempotent and its intent is recorded before anything is deleted:

1. `purge_requested_at` is committed (the API does it in the request; the retention pass for jobs past
   their retention). From then on every retention pass retries the job until `purged_at` is set.
2. Once the job has stopped (not queued or processing, and no step still held by a live worker), its
   blobs are deleted: the upload and everything under `results/{job_id}/`. Deleting a blob that is
   already gone is fine, so a purge killed half-way simply deletes the rest the next time.
3. In one transaction the text the database holds about the job is scrubbed (error messages, the
   prompt and hotwords, step details other than figures, the callback payload's error, the file name)
   and `purged_at` is set. The row stays as a tombstone: statuses, timings and usage.
4. On SQLite the write-ahead log is checkpointed and truncated, so that the old versions of the
   scrubbed rows leave the log; `PRAGMA secure_delete` (shared/core/db.py) has zeroed them in the file.

The pass also closes any batch whose jobs have all ended but which is still open (shared/jobs/batches.py).

The retention pass runs in its own process locally (`retention` component, every
PURGE_INTERVAL_SECONDS) and on a Functions timer on Azure (functions/retention.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Literal

from sqlalchemy import Text, and_, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from shared.core.config import Settings
from shared.core.db import transaction
from shared.domain.messages import result_blob_path
from shared.domain.models import Job, Speaker, WebhookDelivery, utcnow
from shared.domain.options import JobOptions
from shared.jobs.batches import sweep_ended_batches
from shared.jobs.store import get_job
from shared.runtime import Runtime
from shared.runtime.loop import Shutdown, serve
from shared.storage.local import LocalBlobStore

log = logging.getLogger(__name__)

PurgeOutcome = Literal["purged", "waiting", "missing"]

RUNNING_STATUSES = ("queued", "processing")
"""A job in these may still run steps (and write results): it is purged once it has stopped."""
SCRUBBED = "removed when the job's data was purged"
"""What replaces a text column that may have quoted the transcript."""
KEPT_TEXT_DETAILS = frozenset({"device", "model", "engine", "backend", "compute_type", "language"})
"""Step details that are strings and never hold content: what ran, where. Other strings go."""
TEXT_OPTIONS = frozenset({"prompt", "hotwords", "speaker_references"})
"""Job options that are the client's own text (vocabulary, known speakers' names): removed by a purge."""
STALE_STAGING_SECONDS = 6 * 3600
"""A local staging file this old belongs to a write that died; it is deleted by the retention pass."""


def request_purge(job: Job, *, now: datetime | None = None) -> None:
    """Record the intent to purge the job (in the caller's transaction); a repeat changes nothing."""
    if job.purge_requested_at is None:
        job.purge_requested_at = now or utcnow()


def has_stopped(job: Job, *, now: datetime | None = None) -> bool:
    """Nothing runs for the job any more: it is not queued or processing, and no step is held by a
    worker whose lease is still alive (a cancelled job's running step stops at its next boundary)."""
    if job.status in RUNNING_STATUSES:
        return False
    moment = now or utcnow()
    return not any(
        step.status == "processing" and step.lease_expires_at is not None and step.lease_expires_at > moment
        for step in job.steps
    )


def purge_job(runtime: Runtime, job_id: uuid.UUID, *, now: datetime | None = None) -> PurgeOutcome:
    """Purge the job's data if it has stopped, recording the intent first; idempotent. "waiting": the
    intent is recorded and a later retention pass finishes it."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        job = get_job(session=session, job_id=job_id, for_update=True)
        if job is None:
            return "missing"
        if job.purged_at is not None:
            return "purged"
        request_purge(job, now=now)
        if not has_stopped(job, now=now):
            return "waiting"
        audio = job.audio_blob_path
        # Results live under results/{job_id}/ (shared/domain/messages.py); a path recorded elsewhere goes too.
        elsewhere = [
            step.result_blob_path
            for step in job.steps
            if step.result_blob_path and not step.result_blob_path.startswith(f"{job_id}/")
        ]
    if audio:
        runtime.blobs.delete(settings.audio_container, audio)
    # The job's whole upload folder: a taken-in upload's original, or what an upload URL wrote after start.
    runtime.blobs.delete_prefix(settings.audio_container, f"{job_id}/")
    removed = runtime.blobs.delete_prefix(settings.results_container, f"{job_id}/")
    for path in elsewhere:
        runtime.blobs.delete(settings.results_container, path)
    with transaction(runtime.sessions) as session:
        job = get_job(session=session, job_id=job_id, for_update=True)
        if job is None:
            return "missing"
        if job.purged_at is None:
            _scrub(session, job, now=now or utcnow())
    checkpoint_sqlite(runtime)
    log.info(
        "job purged",
        extra={"action": "job_purged", "job_id": str(job_id), "result_blobs": removed + len(elsewhere)},
    )
    return "purged"


def _scrub(session: Session, job: Job, *, now: datetime) -> None:
    """Remove every text the database holds about the job; keep statuses, timings and figures."""
    for step in job.steps:
        if step.status == "processing":
            # A worker that lost its lease must not complete the step later: its claim's fencing token
            # (the attempt) no longer matches a processing step (docs/ARCHITECTURE.md, rule 2).
            step.status = "failed"
            step.retryable = False
            step.lease_expires_at = None
        if step.error_message is not None:
            step.error_message = SCRUBBED
        step.details = scrub_details(step.details)
        step.result_blob_path = None
    if job.error_message is not None:
        job.error_message = SCRUBBED
    job.options = {key: value for key, value in (job.options or {}).items() if key not in TEXT_OPTIONS}
    job.audio_filename = "purged" + PurePosixPath(job.audio_filename).suffix[:16]
    job.audio_blob_path = None
    job.purged_at = now
    if job.audio_deleted_at is None:
        job.audio_deleted_at = now
    for delivery in session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)):
        if delivery.payload.get("error_message") is not None:
            delivery.payload = {**delivery.payload, "error_message": SCRUBBED}
        if delivery.last_error is not None:
            delivery.last_error = SCRUBBED


def scrub_details(details: dict[str, Any] | None) -> dict[str, Any] | None:
    """A step's details without anything that could quote content: figures, flags and the names of
    what ran stay (usage is computed from them, shared/domain/usage.py); other strings and lists go."""
    if not details:
        return details
    kept: dict[str, Any] = {}
    for key, value in details.items():
        figure = value is None or isinstance(value, (bool, int, float))
        if figure or (isinstance(value, str) and key in KEPT_TEXT_DETAILS):
            kept[key] = value
        elif isinstance(value, dict) and key == "usage":
            kept[key] = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return kept


def checkpoint_sqlite(runtime: Runtime, *, attempts: int = 5) -> bool:
    """On SQLite, copy the write-ahead log into the database and truncate it, so that the pages that
    held the scrubbed text before the purge are no longer on disk in the log. A reader in another
    process can hold the checkpoint back; it is retried briefly, and the next purge checkpoints again."""
    if runtime.engine.dialect.name != "sqlite":
        return True
    for attempt in range(attempts):
        connection = runtime.engine.raw_connection()
        try:
            cursor = connection.cursor()
            busy, _frames, _copied = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            cursor.close()
        finally:
            connection.close()
        if not busy:
            return True
        time.sleep(0.05 * (attempt + 1))
    log.warning("the write-ahead log could not be truncated yet", extra={"action": "wal_checkpoint_busy"})
    return False


# --- retention -----------------------------------------------------------------------------------


def _ended_at() -> Any:
    """When a job that is not running ended (or, never started, was last touched)."""
    return func.coalesce(Job.completed_at, Job.updated_at)


def _job_retention(settings: Settings, options: dict[str, Any] | None, server_seconds: int) -> float:
    own = JobOptions.of(options).retention_seconds
    return float(server_seconds if own is None else min(own, server_seconds))


def _candidates(session: Session, *, conditions: list[Any], server_seconds: int, now: datetime, limit: int) -> Any:
    # A job's own retention_seconds (at least 60 s) lives in its JSON options: jobs past the server's
    # retention are due whatever they say; younger ones only if they name a retention of their own.
    ended = _ended_at()
    own_retention = and_(cast(Job.options, Text).like('%"retention_seconds"%'), ended <= now - timedelta(seconds=60))
    return session.execute(
        select(Job.id, Job.options, ended.label("ended_at"))
        .where(
            Job.status.not_in(RUNNING_STATUSES),
            Job.purge_requested_at.is_(None),
            *conditions,
            or_(ended <= now - timedelta(seconds=server_seconds), own_retention),
        )
        .order_by(ended)
        .limit(limit)
    ).all()


def jobs_due_for_purge(
    session: Session, *, settings: Settings, now: datetime | None = None, limit: int = 500
) -> list[uuid.UUID]:
    """Jobs past their result retention whose purge is not requested yet."""
    moment = now or utcnow()
    server = settings.result_retention_seconds
    rows = _candidates(session, conditions=[], server_seconds=server, now=moment, limit=limit)
    return [
        row.id
        for row in rows
        if row.ended_at <= moment - timedelta(seconds=_job_retention(settings, row.options, server))
    ]


def jobs_due_for_audio_deletion(
    session: Session, *, settings: Settings, now: datetime | None = None, limit: int = 500
) -> list[uuid.UUID]:
    """Jobs whose upload has outlived AUDIO_RETENTION_SECONDS (or the job's shorter retention)."""
    moment = now or utcnow()
    server = settings.audio_retention_seconds
    conditions = [Job.audio_deleted_at.is_(None), Job.audio_blob_path.is_not(None)]
    rows = _candidates(session, conditions=conditions, server_seconds=server, now=moment, limit=limit)
    return [
        row.id
        for row in rows
        if row.ended_at <= moment - timedelta(seconds=_job_retention(settings, row.options, server))
    ]


def pending_purges(session: Session, *, limit: int = 500) -> list[uuid.UUID]:
    """Purges recorded but not finished: asked for on a running job, or interrupted."""
    query = select(Job.id).where(Job.purge_requested_at.is_not(None), Job.purged_at.is_(None))
    return list(session.scalars(query.order_by(Job.purge_requested_at).limit(limit)))


def delete_audio(runtime: Runtime, job_id: uuid.UUID, *, now: datetime | None = None) -> bool:
    """Delete the job's upload (and its redacted copy) and record it; the results stay. False if there was
    nothing to do."""
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.audio_deleted_at is not None or not job.audio_blob_path:
            return False
        blob = job.audio_blob_path
    runtime.blobs.delete(runtime.settings.audio_container, blob)
    # The redacted copy of the audio (redact_pii_audio) is personal data like the upload: it goes with it.
    runtime.blobs.delete(runtime.settings.results_container, result_blob_path(job_id, "REDACT_AUDIO", "wav"))
    # Everything under the job's upload folder: the upload as sent, if its deletion at start failed, and
    # whatever its upload URL (a SAS cannot be withdrawn) wrote after the job started (shared/jobs/uploads.py).
    runtime.blobs.delete_prefix(runtime.settings.audio_container, f"{job_id}/")
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Job).where(Job.id == job_id, Job.audio_deleted_at.is_(None)).values(audio_deleted_at=now or utcnow())
        )
    log.info("audio deleted", extra={"action": "audio_deleted", "job_id": str(job_id)})
    return True


@dataclass(frozen=True)
class RetentionPass:
    """What one pass did."""

    purge_requested: int = 0
    purged: int = 0
    waiting: int = 0
    audio_deleted: int = 0
    failed: int = 0


def apply_retention(runtime: Runtime, *, now: datetime | None = None) -> RetentionPass:
    """One pass: request the purges retention calls for, finish every recorded purge that can be, and
    delete audio past its retention. A job that fails is logged and tried again next pass."""
    settings = runtime.settings
    moment = now or utcnow()
    with transaction(runtime.sessions) as session:
        due = jobs_due_for_purge(session, settings=settings, now=moment)
        if due:
            session.execute(
                update(Job)
                .where(Job.id.in_(due), Job.purge_requested_at.is_(None))
                .values(purge_requested_at=moment)
                .execution_options(synchronize_session=False)
            )
    purged = waiting = deleted = failed = 0
    with runtime.sessions() as session:
        pending = pending_purges(session)
    for job_id in pending:
        try:
            outcome = purge_job(runtime, job_id, now=moment)
        except Exception:
            failed += 1
            log.exception("purge failed; retried next pass", extra={"action": "purge_failed", "job_id": str(job_id)})
            continue
        purged += outcome == "purged"
        waiting += outcome == "waiting"
    with runtime.sessions() as session:
        audio_due = jobs_due_for_audio_deletion(session, settings=settings, now=moment)
    for job_id in audio_due:
        try:
            deleted += delete_audio(runtime, job_id, now=moment)
        except Exception:
            failed += 1
            log.exception(
                "audio deletion failed; retried next pass",
                extra={"action": "audio_delete_failed", "job_id": str(job_id)},
            )
    try:
        delete_expired_speakers(runtime, now=moment)
    except Exception:
        failed += 1
        log.exception("speaker retention failed; retried next pass", extra={"action": "speaker_retention_failed"})
    _sweep_local_leftovers(runtime)
    try:
        sweep_ended_batches(runtime)
    except Exception:
        failed += 1
        log.exception("sweep of ended batches failed", extra={"action": "batch_sweep_failed"})
    try:
        _remove_uploads_of_purged_jobs(runtime)
    except Exception:
        failed += 1
        log.exception("sweep of purged jobs' uploads failed", extra={"action": "purged_upload_sweep_failed"})
    done = RetentionPass(purge_requested=len(due), purged=purged, waiting=waiting, audio_deleted=deleted, failed=failed)
    if any((done.purge_requested, done.purged, done.audio_deleted, done.failed)):
        log.info(
            "retention pass",
            extra={
                "action": "retention_pass",
                "purge_requested": done.purge_requested,
                "purged": done.purged,
                "waiting": done.waiting,
                "audio_deleted": done.audio_deleted,
                "failed": done.failed,
            },
        )
    return done


def delete_expired_speakers(runtime: Runtime, *, now: datetime | None = None, batch: int = 500) -> int:
    """SPEAKER_RETENTION_SECONDS: delete the speakers enrolled longer ago than that; returns how many."""
    moment = now or utcnow()
    cutoff = moment - timedelta(seconds=runtime.settings.speaker_retention_seconds)
    with runtime.sessions() as session:
        expired = session.execute(
            select(Speaker.id, Speaker.enroll_job_id).where(Speaker.created_at <= cutoff).limit(batch)
        ).all()
    if not expired:
        return 0
    with transaction(runtime.sessions) as session:
        session.execute(delete(Speaker).where(Speaker.id.in_([row.id for row in expired])))
    for row in expired:
        if row.enroll_job_id is not None:
            purge_job(runtime, row.enroll_job_id, now=moment)
    log.info("speakers past retention deleted", extra={"action": "speaker_retention", "speakers": len(expired)})
    return len(expired)


def _remove_uploads_of_purged_jobs(runtime: Runtime, *, batch: int = 500) -> int:
    """Delete whatever is found in the audio container under a job that has been purged or whose audio
    has been deleted: an upload URL (an Azure SAS cannot be withdrawn before it expires) may have written
    there since, and the passes above only look at jobs whose audio is not deleted yet. Returns how many
    blobs."""
    container = runtime.settings.audio_container
    found: list[uuid.UUID] = []
    for name in runtime.blobs.folders(container):
        try:
            found.append(uuid.UUID(name))
        except ValueError:
            continue
    removed = 0
    for start in range(0, len(found), batch):
        with runtime.sessions() as session:
            purged = session.scalars(
                select(Job.id).where(
                    Job.id.in_(found[start : start + batch]),
                    or_(Job.purged_at.is_not(None), Job.audio_deleted_at.is_not(None)),
                )
            ).all()
        for job_id in purged:
            count = runtime.blobs.delete_prefix(container, f"{job_id}/")
            removed += count
            log.info(
                "upload found under a purged job (or one whose audio is deleted) deleted",
                extra={"action": "purged_upload_deleted", "job_id": str(job_id), "blobs": count},
            )
    return removed


def _sweep_local_leftovers(runtime: Runtime) -> None:
    """The local blob folder keeps copies outside a blob's own file only in unfinished writes and
    uncommitted blocks; both are dropped once stale, so no copy outlives its retention for long."""

    store = runtime.blobs
    if isinstance(store, LocalBlobStore):
        store.discard_stale_staging(older_than_seconds=STALE_STAGING_SECONDS)
        store.discard_expired_blocks()


class RetentionPoller:
    """Retention as one of the consume loop's pollers (shared.runtime.loop.serve): a pass every
    PURGE_INTERVAL_SECONDS; a failing pass (the database away) is logged by the loop, which goes on."""

    name = "retention"
    concurrency = 1

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.idle_seconds = runtime.settings.purge_interval_seconds

    def poll_once(self) -> bool:
        apply_retention(self.runtime)
        return False  # one pass per interval, whatever it found


def retention_loop(runtime: Runtime, stopping: threading.Event) -> None:
    """Apply retention every PURGE_INTERVAL_SECONDS until `stopping` is set."""
    shutdown = Shutdown(runtime.settings.shutdown_grace_seconds)
    shutdown.stopping = stopping
    serve([RetentionPoller(runtime)], shutdown=shutdown)


def run_retention(settings: Settings) -> int:
    """The local host's `retention` component: the poller in its own process, stopped by SIGTERM."""
    runtime = Runtime(settings)
    try:
        serve([RetentionPoller(runtime)], shutdown=Shutdown(settings.shutdown_grace_seconds))
    finally:
        runtime.close()
    return 0
