"""Read-only queries for operators: the dashboard (dashboard/app.py) and the state metrics read these,
never SQL of their own. Small keyword-only functions; the caller passes the session.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, selectinload

from shared.core.config import Settings
from shared.core.errors import BlobNotFound
from shared.domain.models import Job, ProcessingStep, utcnow
from shared.domain.registry import step_types
from shared.domain.results import SpeakerTalk, Transcript
from shared.domain.status import JOB_STATUSES
from shared.domain.usage import Rates, Usage, job_usage, total_usage
from shared.jobs.results import JobResults, load_results
from shared.jobs.retention import jobs_due_for_audio_deletion, jobs_due_for_purge, pending_purges
from shared.runtime import Runtime

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".ogg", ".oga", ".opus", ".flac", ".webm", ".aac", ".mp4", ".wma")
MAX_PLAYER_BYTES = 50 * 1024 * 1024
"""Uploads larger than this are not loaded into the dashboard's audio player."""


def job_status_counts(*, session: Session) -> dict[str, int]:
    """Every job status with its count (zero included, so charts and gauges keep their series)."""
    counts = dict.fromkeys(JOB_STATUSES, 0)
    for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        counts[status] = count
    return counts


@dataclass(frozen=True)
class JobStats:
    total: int
    by_status: dict[str, int]
    created_in_window: int
    finished_in_window: int
    active: int
    """queued or processing."""
    mean_turnaround_seconds: float | None
    """Created → finished, over jobs finished in the window."""


def job_stats(*, session: Session, window: timedelta = timedelta(hours=24)) -> JobStats:
    since = utcnow() - window
    by_status = job_status_counts(session=session)
    created = session.scalar(select(func.count()).select_from(Job).where(Job.created_at >= since)) or 0
    finished = session.execute(
        select(Job.created_at, Job.completed_at).where(
            Job.completed_at.is_not(None),
            Job.completed_at >= since,
        )
    ).all()
    turnarounds = [(done - made).total_seconds() for made, done in finished if made and done]
    return JobStats(
        total=sum(by_status.values()),
        by_status=by_status,
        created_in_window=created,
        finished_in_window=len(finished),
        active=by_status["queued"] + by_status["processing"],
        mean_turnaround_seconds=statistics.fmean(turnarounds) if turnarounds else None,
    )


@dataclass(frozen=True)
class StepTypeStats:
    step_type: str
    completed: int
    failed: int
    processing: int
    retries: int
    """Sum of retry_count over the steps in the window."""
    per_minute: float
    """Completed steps per minute over the window."""
    p50_seconds: float | None
    p95_seconds: float | None
    mean_seconds: float | None
    audio_seconds: float
    """Audio processed by the completed steps (where they recorded it)."""


def step_stats(
    *,
    session: Session,
    window: timedelta = timedelta(hours=1),
    limit: int = 20_000,
) -> list[StepTypeStats]:
    """Throughput and latency (started → completed) per step type over steps updated in the window.
    Skipped steps (a translation of English) are left out: they took no work."""
    since = utcnow() - window
    rows = session.execute(
        select(
            ProcessingStep.step_type,
            ProcessingStep.status,
            ProcessingStep.retry_count,
            ProcessingStep.started_at,
            ProcessingStep.completed_at,
            ProcessingStep.details,
        )
        .where(ProcessingStep.updated_at >= since)
        .order_by(ProcessingStep.updated_at.desc())
        .limit(limit)
    ).all()
    stats = []
    for step_type in step_types():
        mine = [row for row in rows if row.step_type == step_type and not (row.details or {}).get("skipped")]
        done = [row for row in mine if row.status == "completed"]
        latencies = sorted(_elapsed(row.started_at, row.completed_at) for row in done if row.started_at)
        audio = sum(_number((row.details or {}).get("audio_duration_seconds")) for row in done)
        stats.append(
            StepTypeStats(
                step_type=step_type,
                completed=len(done),
                failed=sum(1 for row in mine if row.status == "failed"),
                processing=sum(1 for row in mine if row.status == "processing"),
                retries=sum(row.retry_count for row in mine),
                per_minute=len(done) / (window.total_seconds() / 60),
                p50_seconds=_quantile(latencies, 0.5),
                p95_seconds=_quantile(latencies, 0.95),
                mean_seconds=statistics.fmean(latencies) if latencies else None,
                audio_seconds=audio,
            )
        )
    return stats


def _elapsed(start: datetime, end: datetime | None) -> float:
    return ((end or start) - start).total_seconds()


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _quantile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank quantile of an ascending list."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    workflow_type: str | None = None
    search: str | None = None
    """A whole job id, or part of the audio file name."""
    since: datetime | None = None


@dataclass(frozen=True)
class JobRow:
    job_id: uuid.UUID
    status: str
    workflow_type: str
    audio_filename: str
    language: str | None
    created_at: datetime
    updated_at: datetime
    duration_seconds: float | None
    """Created → finished for finished jobs, created → now otherwise."""
    steps_done: int
    steps_total: int
    retries: int
    error_message: str | None


def recent_jobs(*, session: Session, filters: JobFilter = JobFilter(), limit: int = 100) -> list[JobRow]:
    conditions: list[Any] = []
    if filters.status:
        conditions.append(Job.status == filters.status)
    if filters.workflow_type:
        conditions.append(Job.workflow_type == filters.workflow_type)
    if filters.since is not None:
        conditions.append(Job.created_at >= filters.since)
    if filters.search and filters.search.strip():
        term = filters.search.strip()
        matches: list[Any] = [Job.audio_filename.ilike(f"%{term}%")]
        with contextlib.suppress(ValueError):
            matches.append(Job.id == uuid.UUID(term))
        conditions.append(or_(*matches))
    query = select(Job).where(*conditions).options(selectinload(Job.steps))
    jobs = session.scalars(query.order_by(Job.created_at.desc()).limit(limit)).all()
    now = utcnow()
    return [
        JobRow(
            job_id=job.id,
            status=job.status,
            workflow_type=job.workflow_type,
            audio_filename=job.audio_filename,
            language=job.detected_language or job.source_language,
            created_at=job.created_at,
            updated_at=job.updated_at,
            duration_seconds=((job.completed_at or now) - job.created_at).total_seconds(),
            steps_done=sum(1 for step in job.steps if step.status == "completed"),
            steps_total=len(job.steps),
            retries=sum(step.retry_count for step in job.steps),
            error_message=job.error_message,
        )
        for job in jobs
    ]


@dataclass(frozen=True)
class StepDetail:
    step_type: str
    status: str
    retry_count: int
    attempt: int
    worker_id: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    progress: float | None
    error_message: str | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobDetail:
    job_id: uuid.UUID
    status: str
    workflow_type: str
    audio_filename: str
    audio_blob_path: str | None
    source_language: str | None
    detected_language: str | None
    language_confidence: float | None
    target_language: str | None
    audio_duration_seconds: float | None
    source_job_id: uuid.UUID | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    steps: list[StepDetail]

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_blob_path) and self.audio_filename.lower().endswith(AUDIO_SUFFIXES)


def job_detail(*, session: Session, job_id: uuid.UUID) -> JobDetail | None:
    job = session.scalars(select(Job).where(Job.id == job_id).options(selectinload(Job.steps))).one_or_none()
    if job is None:
        return None
    return JobDetail(
        job_id=job.id,
        status=job.status,
        workflow_type=job.workflow_type,
        audio_filename=job.audio_filename,
        audio_blob_path=job.audio_blob_path,
        source_language=job.source_language,
        detected_language=job.detected_language,
        language_confidence=job.language_confidence,
        target_language=job.target_language,
        audio_duration_seconds=job.audio_duration_seconds,
        source_job_id=job.source_job_id,
        error_message=job.error_message,
        created_at=job.created_at,
        updated_at=job.updated_at,
        completed_at=job.completed_at,
        steps=[
            StepDetail(
                step_type=step.step_type,
                status=step.status,
                retry_count=step.retry_count,
                attempt=step.attempt,
                worker_id=step.worker_id,
                started_at=step.started_at,
                completed_at=step.completed_at,
                duration_seconds=(step.completed_at - step.started_at).total_seconds()
                if step.started_at and step.completed_at
                else None,
                progress=step.progress,
                error_message=step.error_message,
                details=dict(step.details or {}),
            )
            for step in job.steps
        ],
    )


def _results(runtime: Runtime, job_id: uuid.UUID) -> JobResults:
    """The job's results through the typed reader: completed steps only."""
    with runtime.sessions() as session:
        job = session.scalars(select(Job).options(selectinload(Job.steps)).where(Job.id == job_id)).first()
        return load_results(runtime, job) if job is not None else JobResults()


def transcript_preview(*, runtime: Runtime, job_id: uuid.UUID, max_chars: int = 2000) -> str | None:
    """The beginning of the job's transcript (its TRANSCRIBE result), or None if there is none yet."""
    transcript = _results(runtime, job_id).get("TRANSCRIBE", Transcript)
    if transcript is None:
        return None
    text: str = transcript.full_text()
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + " …"


def job_speakers(*, runtime: Runtime, job_id: uuid.UUID) -> list[SpeakerTalk]:
    """Who spoke and for how long, where the job was diarized or its channels split; [] otherwise."""
    transcript = _results(runtime, job_id).transcript
    return list(transcript.speakers or []) if transcript is not None else []


def uploaded_audio(*, runtime: Runtime, detail: JobDetail) -> bytes | None:
    """The uploaded audio for a player, or None if there is none, it is not audio, or it is too large."""
    if not detail.has_audio or detail.audio_blob_path is None:
        return None
    container = runtime.settings.audio_container
    try:
        if runtime.blobs.size(container, detail.audio_blob_path) > MAX_PLAYER_BYTES:
            return None
        return runtime.blobs.get(container, detail.audio_blob_path)
    except BlobNotFound:
        return None


@dataclass(frozen=True)
class RetentionStatus:
    """What the retention pass (shared/jobs/retention.py) has to do, and has done."""

    audio_due: int
    """Uploads past AUDIO_RETENTION_SECONDS (or their job's shorter retention), not deleted yet."""
    purge_due: int
    """Jobs past their result retention, or whose purge was asked for, not purged yet."""
    purged: int
    audio_deleted: int
    """Jobs whose upload was deleted (purged ones included)."""


def retention_status(*, session: Session, settings: Settings, now: datetime | None = None) -> RetentionStatus:

    limit = 100_000
    due = jobs_due_for_purge(session, settings=settings, now=now, limit=limit)
    return RetentionStatus(
        audio_due=len(jobs_due_for_audio_deletion(session, settings=settings, now=now, limit=limit)),
        purge_due=len(due) + len(pending_purges(session, limit=limit)),
        purged=session.scalar(select(func.count()).select_from(Job).where(Job.purged_at.is_not(None))) or 0,
        audio_deleted=session.scalar(select(func.count()).select_from(Job).where(Job.audio_deleted_at.is_not(None)))
        or 0,
    )


def usage_since(*, session: Session, settings: Settings, since: datetime) -> Usage:
    """Every job's usage (shared/domain/usage.py) over the jobs created since then, summed per step type and
    device, at the configured rates."""
    rates = Rates.of(settings)
    rows = session.execute(
        select(Job.id, Job.audio_duration_seconds, ProcessingStep.step_type, ProcessingStep.details)
        .outerjoin(ProcessingStep, ProcessingStep.job_id == Job.id)
        .where(Job.created_at >= since)
    ).all()
    audio: dict[uuid.UUID, float | None] = {}
    steps: dict[uuid.UUID, list[tuple[str, dict[str, Any] | None]]] = {}
    for row in rows:
        audio[row.id] = row.audio_duration_seconds
        if row.step_type is not None:
            steps.setdefault(row.id, []).append((row.step_type, row.details))
    jobs = [
        job_usage(audio_seconds=seconds, steps=steps.get(job_id, []), rates=rates) for job_id, seconds in audio.items()
    ]
    return total_usage(jobs, rates=rates)


@dataclass(frozen=True)
class LiveJobs:
    """Live sessions recorded as jobs (options `"live": true`, gpu_worker/realtime/recording.py)."""

    count: int
    audio_seconds: float
    recovered: int
    """Of them, sessions recovered after the live component crashed (options `"recovered": true`)."""


def live_jobs_since(*, session: Session, since: datetime) -> LiveJobs:
    """Live jobs created since then: how many, their audio, how many were recovered. The JSON test
    renders as json_extract on SQLite and a ->> cast on PostgreSQL."""
    live = Job.options["live"].as_boolean().is_(True)
    recovered = Job.options["recovered"].as_boolean().is_(True)
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(Job.audio_duration_seconds), 0.0),
            func.coalesce(func.sum(case((recovered, 1), else_=0)), 0),
        ).where(Job.created_at >= since, live)
    ).one()
    return LiveJobs(count=int(row[0] or 0), audio_seconds=float(row[1] or 0.0), recovered=int(row[2] or 0))
