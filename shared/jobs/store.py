"""Data access for jobs and steps. Small keyword-only functions; the caller passes the session and
owns the transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from shared.bus import MessageBus
from shared.domain.messages import JobEvent
from shared.domain.models import Job, ProcessingStep, utcnow
from shared.domain.workflow import INTERNAL_WORKFLOWS, JobState, StepState


@dataclass(frozen=True)
class JobSnapshot:
    """What a worker needs to know about the job it works for."""

    id: uuid.UUID
    workflow_type: str
    status: str
    audio_filename: str
    audio_blob_path: str | None
    source_language: str | None
    detected_language: str | None
    target_language: str | None
    source_job_id: uuid.UUID | None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, job: Job) -> JobSnapshot:
        return cls(
            id=job.id,
            workflow_type=job.workflow_type,
            status=job.status,
            audio_filename=job.audio_filename,
            audio_blob_path=job.audio_blob_path,
            source_language=job.source_language,
            detected_language=job.detected_language,
            target_language=job.target_language,
            source_job_id=job.source_job_id,
            options=dict(job.options or {}),
        )

    @property
    def language(self) -> str | None:
        """The spoken language: what LID found, else what the client said."""
        return self.detected_language or self.source_language


def job_state(job: Job, *, chunk_seconds: float | None = None) -> JobState:
    return JobState(
        chunk_seconds=chunk_seconds,
        workflow_type=job.workflow_type,
        status=job.status,
        source_language=job.source_language,
        detected_language=job.detected_language,
        target_language=job.target_language,
        audio_duration_seconds=job.audio_duration_seconds,
        options=dict(job.options or {}),
    )


def step_states(job: Job) -> dict[str, StepState]:
    return {
        step.step_type: StepState(
            step_type=step.step_type,
            status=step.status,
            retry_count=step.retry_count,
            retryable=step.retryable,
            error_message=step.error_message,
        )
        for step in job.steps
    }


def create_job(
    *,
    session: Session,
    audio_filename: str,
    workflow_type: str,
    source_language: str | None,
    target_language: str,
    callback_url: str | None,
    source_job_id: uuid.UUID | None,
    audio_blob_path: str | None,
    job_id: uuid.UUID | None = None,
    api_key_id: str | None = None,
    options: dict[str, Any] | None = None,
    batch_id: uuid.UUID | None = None,
) -> Job:
    job = Job(
        id=job_id or uuid.uuid4(),
        audio_filename=audio_filename,
        workflow_type=workflow_type,
        source_language=source_language,
        target_language=target_language,
        callback_url=callback_url,
        source_job_id=source_job_id,
        audio_blob_path=audio_blob_path,
        status="pending_upload",
        api_key_id=api_key_id,
        options=options or None,
        batch_id=batch_id,
    )
    session.add(job)
    session.flush()
    return job


def get_job(*, session: Session, job_id: uuid.UUID, for_update: bool = False) -> Job | None:
    query = select(Job).where(Job.id == job_id).options(selectinload(Job.steps), selectinload(Job.webhook_deliveries))
    if for_update:
        query = query.with_for_update(of=Job)
    return session.scalars(query).one_or_none()


def upload_refusal(job: Job | None) -> str | None:
    """Why an upload URL may not write its job's upload now, or None while it may: only before the job
    starts (docs/SECURITY.md). After start the probed file is what the steps read, and nothing may be
    written under a job whose data is (being) deleted."""
    if job is None:
        return "the upload URL's job does not exist"
    if job.purge_requested_at is not None:
        return "the upload URL's job has been deleted; nothing more can be written under it"
    if job.status != "pending_upload":
        return f"the upload URL's job has started ({job.status}); an upload URL takes writes only before start"
    return None


def lock_jobs(*, session: Session, job_ids: set[uuid.UUID]) -> list[Job]:
    """Load and lock these jobs (with their steps), in id order so that concurrent lockers cannot
    deadlock."""
    if not job_ids:
        return []
    query = (
        select(Job)
        .where(Job.id.in_(sorted(job_ids)))
        .order_by(Job.id)
        .options(selectinload(Job.steps))
        .with_for_update(of=Job)
    )
    return list(session.scalars(query).all())


def list_jobs(
    *,
    session: Session,
    status: str | None = None,
    workflow_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
    api_key_id: str | None = None,
) -> tuple[list[Job], int]:
    """A page of jobs and the total matching; `api_key_id` keeps only the jobs that key created. The
    service's own jobs (INTERNAL_WORKFLOWS) are never listed."""
    conditions: list[Any] = [Job.workflow_type.not_in(INTERNAL_WORKFLOWS)]
    if api_key_id is not None:
        conditions.append(Job.api_key_id == api_key_id)
    if status is not None:
        conditions.append(Job.status == status)
    if workflow_type is not None:
        conditions.append(Job.workflow_type == workflow_type)
    total = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
    jobs = session.scalars(
        select(Job)
        .where(*conditions)
        .options(selectinload(Job.steps), selectinload(Job.webhook_deliveries))
        .order_by(Job.created_at.desc(), Job.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(jobs), total


def start_job(
    *,
    session: Session,
    bus: MessageBus,
    queue: str,
    job_id: uuid.UUID,
    traceparent: str | None = None,
) -> bool:
    """pending_upload → queued, and the job_started event committed with it. False if the job was
    not pending_upload (already started, cancelled, …). `traceparent` (the starting request's span)
    rides on the event, so that the job's routing and steps join that trace."""
    started = session.execute(
        update(Job).where(Job.id == job_id, Job.status == "pending_upload").values(status="queued", updated_at=utcnow())
    )
    if started.rowcount != 1:  # type: ignore[attr-defined]
        return False
    event = JobEvent(job_id=job_id, kind="job_started", traceparent=traceparent)
    properties = {"traceparent": traceparent} if traceparent else None
    bus.stage(session, queue, message_id=event.message_id, body=event.model_dump_json(), properties=properties)
    return True


def step_of(job: Job, step_type: str) -> ProcessingStep | None:
    return next((step for step in job.steps if step.step_type == step_type), None)
