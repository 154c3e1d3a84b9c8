"""The router: consumes job-events, asks the workflow what comes next, and applies the decision.

The state change and the messages it causes are committed in one transaction (docs/ARCHITECTURE.md, rule 1); the
job row is locked for the decision, so two events of one job are routed one after the other.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.trace import SpanKind
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.bus import Outgoing, publish_committed
from shared.core.logs import log_context
from shared.core.tracing import current_traceparent, span
from shared.domain.messages import JobEvent
from shared.domain.models import Job
from shared.domain.workflow import Decision, Event
from shared.jobs.batches import close_batches
from shared.jobs.lifecycle import decide
from shared.jobs.retention import purge_job
from shared.jobs.store import lock_jobs
from shared.jobs.webhooks import deliver_now
from shared.runtime import Runtime, metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routed:
    job_id: uuid.UUID
    decision: Decision
    webhook_id: uuid.UUID | None
    purge_pending: bool = False
    """A purge was asked for while the job ran: tried once this routing has committed."""


RouteResult = Decision | None | Exception
"""Per event: the decision taken, None (unknown job), or the error that stopped it (ValueError: malformed,
dead-letter it; anything else: deliver it again)."""


def route_event(runtime: Runtime, body: str) -> Decision | None:
    """Handle one job-events message. Raises on infrastructure errors (the message is retried);
    a malformed message raises ValueError (the caller dead-letters it)."""
    (result,) = route_events(runtime, [body])
    if isinstance(result, Exception):
        raise result
    return result


SettleIn = Callable[[Session, list[int]], object]
"""Settles the messages at these indexes inside the routing transaction (see MessageBus.complete_in)."""


def route_events(runtime: Runtime, bodies: list[str], *, settle_in: SettleIn | None = None) -> list[RouteResult]:
    """Route a batch of job events in one transaction (one lock on each job, one commit), falling back
    to one transaction per event if the batch fails, so that one bad event holds up no other. With
    `settle_in`, each transaction also settles the messages it routed."""
    results: list[RouteResult] = []
    events: dict[int, JobEvent] = {}
    for index, body in enumerate(bodies):
        try:
            events[index] = JobEvent.model_validate_json(body)
            results.append(None)
        except ValidationError as error:
            results.append(ValueError(f"malformed job event: {error.errors()[:1]}"))
    if not events:
        return results
    batch_webhooks: list[uuid.UUID] = []
    try:
        routed = _apply(runtime, list(events.values()), settle_in, list(events), batch_webhooks=batch_webhooks)
    except Exception as error:
        if len(events) == 1:
            (index,) = events
            results[index] = error
            return results
        log.warning("batch routing failed; routing one by one", extra={"action": "route_batch_fallback"})
        routed, batch_webhooks = [], []
        for index, event in events.items():
            try:
                routed.extend(_apply(runtime, [event], settle_in, [index], batch_webhooks=batch_webhooks))
            except Exception as single_error:
                results[index] = single_error
                routed.append(None)
    publish_committed(runtime.bus)
    for index, outcome in zip(events, routed, strict=True):
        if outcome is not None:
            results[index] = outcome.decision
    deliver_now(runtime, [outcome.webhook_id for outcome in routed if outcome and outcome.webhook_id] + batch_webhooks)
    _finish_purges(runtime, {outcome.job_id for outcome in routed if outcome and outcome.purge_pending})
    return results


def _finish_purges(runtime: Runtime, job_ids: set[uuid.UUID]) -> None:
    """Purge the jobs whose purge waited for their running step (DELETE ?purge=true on a running job):
    the event just routed may be that step stopping, and the README promises the purge as soon as it
    has. A job still running stays recorded; a failure is left to the retention pass."""
    for job_id in sorted(job_ids):
        try:
            purge_job(runtime, job_id)
        except Exception:
            log.exception(
                "purge deferred to the retention pass", extra={"action": "purge_deferred", "job_id": str(job_id)}
            )


def _apply(
    runtime: Runtime,
    events: list[JobEvent],
    settle_in: SettleIn | None = None,
    indexes: list[int] | None = None,
    *,
    batch_webhooks: list[uuid.UUID] | None = None,
) -> list[Routed | None]:
    """Decide and apply each event in one transaction. Jobs are locked in id order, so concurrent
    routers cannot deadlock; events of one job are applied in order against its updated state. The
    batches of the jobs that ended are closed last, in the same transaction (shared/jobs/batches.py);
    the `batch.completed` webhooks staged are added to `batch_webhooks` (tried once committed)."""
    with runtime.sessions() as session, session.begin():
        if runtime.bus.shares_database and session.get_bind().dialect.name == "postgresql":
            # Safe without waiting for the disk: the events being routed are settled in this commit or a
            # later one in the same WAL, so a database crash that loses this commit loses that settlement
            # too, and the events are delivered again. Not so with Service Bus, whose settlement lives
            # elsewhere.
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        jobs = {job.id: job for job in lock_jobs(session=session, job_ids={event.job_id for event in events})}
        routed: list[Routed | None] = []
        outgoing: list[Outgoing] = []
        for event in events:
            job = jobs.get(event.job_id)
            if job is None:
                log.warning("event for unknown job", extra={"action": "route_unknown_job", "job_id": str(event.job_id)})
                routed.append(None)
                continue
            routed.append(_decide(runtime, session, job, event, outgoing))
        ended = [jobs[outcome.job_id].batch_id for outcome in routed if outcome is not None and outcome.decision.notify]
        staged = close_batches(session, settings=runtime.settings, batch_ids=ended)
        runtime.bus.stage_many(session, outgoing)
        if settle_in is not None and indexes is not None:
            settle_in(session, indexes)
    if batch_webhooks is not None:
        batch_webhooks.extend(staged)
    return routed


def _decide(runtime: Runtime, session: Session, job: Job, event: JobEvent, outgoing: list[Outgoing]) -> Routed:
    """Route one event as one span that continues the event's trace; the step it dispatches carries the
    span on, so that a job's API request, routing and steps form one trace."""
    with (
        log_context(job_id=str(job.id), step_type=event.step_type, attempt=event.attempt),
        span(
            f"route {event.kind}",
            traceparent=event.traceparent,
            kind=SpanKind.CONSUMER,
            attributes={"speechflow.job_id": str(job.id), "speechflow.step_type": event.step_type},
        ) as current,
    ):
        routed = _decide_in_trace(runtime, session, job, event, outgoing)
        current.set_attribute("speechflow.job_status", job.status)
    metrics.ROUTED_EVENTS.labels(kind=event.kind).inc()
    if routed.decision.notify and routed.decision.job_status is not None:
        metrics.JOBS_FINISHED.labels(status=routed.decision.job_status).inc()
    return routed


def _decide_in_trace(runtime: Runtime, session: Session, job: Job, event: JobEvent, outgoing: list[Outgoing]) -> Routed:
    """Apply the workflow's decision to the job; the messages it sends are added to `outgoing`."""
    applied = decide(
        session,
        settings=runtime.settings,
        job=job,
        event=Event(kind=event.kind, step_type=event.step_type, attempt=event.attempt),
        traceparent=current_traceparent() or event.traceparent,
    )
    outgoing.extend(applied.messages)
    log.info(
        applied.decision.reason or "no change",
        extra={
            "action": "route",
            "job_id": str(job.id),
            "event": event.kind,
            "step_type": event.step_type,
            "attempt": event.attempt,
            "job_status": job.status,
        },
    )
    return Routed(
        job_id=job.id,
        decision=applied.decision,
        webhook_id=applied.webhook_id,
        purge_pending=job.purge_requested_at is not None and job.purged_at is None,
    )
