"""The step store: a step's rows as workers see them — the atomic claim with its fencing token, the
lease renewed while working, a step handed back, and the completion or failure committed together with
the job event it causes (docs/ARCHITECTURE.md, rules 1–3)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from shared.bus import publish_committed
from shared.core.tracing import current_traceparent, trace_properties
from shared.domain.messages import JobEvent, StepMessage
from shared.domain.models import Job, ProcessingStep, utcnow
from shared.domain.status import ACTIVE_JOB_STATUSES
from shared.jobs.store import JobSnapshot
from shared.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A step this worker holds. `attempt` is the fencing token: only the holder of the newest
    claim can complete or fail the step."""

    step_id: uuid.UUID
    step_type: str
    attempt: int
    retry_count: int
    worker_id: str
    job: JobSnapshot
    parts: int | None = None
    """For a part of a fanned-out step, or its join: how many parts the router dispatched."""


@dataclass(frozen=True)
class Refusal:
    """Why a step could not be claimed. `settle` means the message is obsolete: acknowledge it."""

    reason: Literal["gone", "stale", "finished", "job_inactive", "busy"]
    retry_at: datetime | None = None

    @property
    def settle(self) -> bool:
        return self.reason != "busy"


def claim_step(runtime: Runtime, message: StepMessage, *, worker_id: str) -> Claim | Refusal:
    """One conditional UPDATE: pending (or processing with an expired lease) → processing by us."""
    now = utcnow()
    lease = timedelta(seconds=runtime.settings.lock_duration_seconds)
    with runtime.sessions() as session, session.begin():
        claimed = session.execute(
            update(ProcessingStep)
            .where(
                ProcessingStep.id == message.step_id,
                ProcessingStep.retry_count == message.attempt,
                or_(
                    ProcessingStep.status == "pending",
                    and_(ProcessingStep.status == "processing", ProcessingStep.lease_expires_at < now),
                ),
                ProcessingStep.job_id.in_(select(Job.id).where(Job.status.in_(ACTIVE_JOB_STATUSES))),
            )
            .values(
                status="processing",
                worker_id=worker_id,
                attempt=ProcessingStep.attempt + 1,
                started_at=now,
                lease_expires_at=now + lease,
                progress=0.0,
                updated_at=now,
            )
            .returning(ProcessingStep.attempt)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if claimed is not None:
            job = session.get_one(Job, message.job_id)
            return Claim(
                step_id=message.step_id,
                step_type=message.step_type,
                attempt=claimed,
                retry_count=message.attempt,
                worker_id=worker_id,
                job=JobSnapshot.of(job),
                parts=message.parts,
            )
        step = session.get(ProcessingStep, message.step_id)
        if step is None:
            return Refusal("gone")
        if step.retry_count != message.attempt:
            return Refusal("stale")
        if step.status in ("completed", "failed"):
            return Refusal("finished")
        job_status = session.scalar(select(Job.status).where(Job.id == step.job_id))
        if job_status not in ACTIVE_JOB_STATUSES:
            return Refusal("job_inactive")
        return Refusal("busy", retry_at=step.lease_expires_at)


def _still_ours(claim: Claim) -> tuple[Any, ...]:
    """The step is still processing under our claim (the fencing token is the attempt)."""
    return (
        ProcessingStep.id == claim.step_id,
        ProcessingStep.attempt == claim.attempt,
        ProcessingStep.status == "processing",
    )


def renew_lease(runtime: Runtime, claim: Claim, *, progress: float | None = None) -> bool:
    """Extend our lease (and record progress). False when the claim is no longer ours."""
    now = utcnow()
    values: dict[str, Any] = {
        "lease_expires_at": now + timedelta(seconds=runtime.settings.lock_duration_seconds),
        "updated_at": now,
    }
    if progress is not None:
        values["progress"] = max(0.0, min(1.0, progress))
    with runtime.sessions() as session, session.begin():
        result = session.execute(update(ProcessingStep).where(*_still_ours(claim)).values(**values))
        return result.rowcount == 1  # type: ignore[attr-defined]


def release_step(runtime: Runtime, claim: Claim) -> bool:
    """Hand our claimed step back unfinished: pending again, so the next delivery claims it at once."""
    with runtime.sessions() as session, session.begin():
        result = session.execute(
            update(ProcessingStep)
            .where(*_still_ours(claim))
            .values(status="pending", lease_expires_at=None, worker_id=None, progress=None, updated_at=utcnow())
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def job_is_cancelled(runtime: Runtime, job_id: uuid.UUID) -> bool:
    with runtime.sessions() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id)) == "cancelled"


def finish_step(
    runtime: Runtime,
    claim: Claim,
    *,
    status: Literal["completed", "failed"],
    result_path: str | None = None,
    details: dict[str, Any] | None = None,
    job_updates: dict[str, Any] | None = None,
    error: str | None = None,
    retryable: bool = True,
    settle_in: Callable[[Session], object] | None = None,
) -> bool:
    """Mark our claimed step completed or failed and stage the job event, in one transaction —
    with `settle_in`, which settles the step's message in that same transaction where the bus can.
    False (and nothing changed) when another worker holds a newer claim."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": status,
        "completed_at": now if status == "completed" else None,
        "lease_expires_at": None,
        "updated_at": now,
        "details": details or None,
    }
    if status == "completed":
        values.update(result_blob_path=result_path, error_message=None, progress=1.0, retryable=True)
    else:
        values.update(error_message=error, retryable=retryable)
    with runtime.sessions() as session, session.begin():
        result = session.execute(update(ProcessingStep).where(*_still_ours(claim)).values(**values))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        if job_updates:
            session.execute(update(Job).where(Job.id == claim.job.id).values(updated_at=now, **job_updates))
        # The event continues the step's trace, so that the router's span joins the job's one trace.
        traceparent = current_traceparent()
        event = JobEvent(
            job_id=claim.job.id,
            kind="step_completed" if status == "completed" else "step_failed",
            step_type=claim.step_type,  # type: ignore[arg-type]
            attempt=claim.retry_count,
            traceparent=traceparent,
        )
        runtime.bus.stage(
            session,
            runtime.settings.job_events_queue,
            message_id=event.message_id,
            body=event.model_dump_json(),
            properties=trace_properties(traceparent),
        )
        if settle_in is not None:
            settle_in(session)
    publish_committed(runtime.bus)
    return True
