"""Applying the workflow's decisions: one function for the router, the API (cancel) and the dead-letter
consumer alike. The caller holds the job locked and owns the transaction; the messages a decision sends
are returned for the caller to stage in that same transaction (docs/ARCHITECTURE.md, rule 1)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from shared.bus import Outgoing
from shared.core.config import Settings
from shared.core.tracing import trace_properties
from shared.domain.messages import StepMessage
from shared.domain.models import Job, ProcessingStep, utcnow
from shared.domain.registry import queue_for, retry_policy_for
from shared.domain.workflow import Decision, Event, next_decision
from shared.jobs.store import job_state, step_of, step_states
from shared.jobs.webhooks import stage_webhook


@dataclass(frozen=True)
class Applied:
    decision: Decision
    webhook_id: uuid.UUID | None = None
    """A webhook staged for the job's terminal status, to try at once after the commit."""
    messages: list[Outgoing] = field(default_factory=list)
    """Step messages to stage in the caller's transaction."""


def decide(session: Session, *, settings: Settings, job: Job, event: Event, traceparent: str | None = None) -> Applied:
    """Ask the workflow what this event means for the job, and apply it."""
    decision = next_decision(
        job=job_state(job, chunk_seconds=settings.whisper.chunk_seconds),
        steps=step_states(job),
        event=event,
        max_retries=settings.max_retries,
        backoff_seconds=settings.retry_backoff_seconds,
        retry_policy=retry_policy_for(settings),
    )
    return apply_decision(session, settings=settings, job=job, decision=decision, traceparent=traceparent)


def apply_decision(
    session: Session, *, settings: Settings, job: Job, decision: Decision, traceparent: str | None = None
) -> Applied:
    """Record what the decision says on the job and its steps; return the messages it sends."""
    now = utcnow()
    if decision.dead_lettered_step is not None:
        step = step_of(job, decision.dead_lettered_step)
        if step is not None:
            step.status = "failed"
            step.retryable = False
            step.lease_expires_at = None
            step.error_message = step.error_message or "message dead-lettered after repeated delivery failures"
    for skip in decision.skips:
        job.steps.append(
            ProcessingStep(
                id=uuid.uuid4(),
                step_type=skip.step_type,
                status="completed",
                started_at=now,
                completed_at=now,
                details={"skipped": True, "reason": skip.reason},
            )
        )
    state = job_state(job, chunk_seconds=settings.whisper.chunk_seconds)
    messages: list[Outgoing] = []
    for dispatch in decision.dispatches:
        step = step_of(job, dispatch.step_type)
        if step is None:
            step = ProcessingStep(id=uuid.uuid4(), step_type=dispatch.step_type, status="pending", retry_count=0)
            job.steps.append(step)
        else:
            step.status = "pending"
            step.retry_count = dispatch.attempt
            step.lease_expires_at = None
            step.worker_id = None
        message = StepMessage(
            job_id=job.id,
            step_id=step.id,
            step_type=dispatch.step_type,
            attempt=dispatch.attempt,
            parts=dispatch.parts,
            traceparent=traceparent,
        )
        messages.append(
            Outgoing(
                queue=queue_for(settings, dispatch.step_type, state),
                message_id=message.message_id,
                body=message.model_dump_json(),
                delay=dispatch.delay_seconds,
                properties=trace_properties(message.traceparent),
            )
        )
    webhook_id = None
    if decision.job_status is not None:
        job.status = decision.job_status
        job.updated_at = now
        if decision.error_message:
            job.error_message = decision.error_message
        if decision.notify:
            job.completed_at = now
            delivery = stage_webhook(
                session, settings=settings, job=job, status=decision.job_status, error=decision.error_message
            )
            webhook_id = delivery.id if delivery is not None else None
    return Applied(decision=decision, webhook_id=webhook_id, messages=messages)
