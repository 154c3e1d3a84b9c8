"""Dead letters are handled, never silent.

A message lands in its queue's dead-letter sub-queue when it could not be processed (max delivery
count: a worker died on it every time; or it was refused as malformed). For each one this consumer:
- a step message: marks the step failed with the dead-letter reason (unless it completed meanwhile)
  and sends `step_dead_lettered` to the router, which applies the workflow's decision (job failed, or
  partial_complete) and the callback;
- a job event the router could not handle: fails the job with the reason and stages its callback;
- anything unreadable: logged with its reason and body, and removed.
In Azure these are Service Bus triggers on `<queue>/$DeadLetterQueue`; locally the host pumps them.
"""

from __future__ import annotations

import logging
import uuid
from typing import Literal

from pydantic import ValidationError
from sqlalchemy import select

from shared.bus import publish_committed
from shared.domain.messages import JobEvent, StepMessage
from shared.domain.models import ProcessingStep, utcnow
from shared.domain.registry import all_queues
from shared.domain.workflow import Event
from shared.jobs.batches import close_batches
from shared.jobs.lifecycle import decide
from shared.jobs.store import get_job
from shared.jobs.webhooks import deliver_now
from shared.runtime import Runtime
from shared.runtime.loop import Consumer, Delivery, Handler, Settlement, Shutdown, serve

log = logging.getLogger(__name__)

Handled = Literal["step_failed", "step_obsolete", "job_failed", "job_obsolete", "unreadable"]


def handle_dead_letter(
    runtime: Runtime, *, queue: str, body: str, reason: str | None, description: str | None
) -> Handled:
    """Account for one dead-lettered message; returns what was done."""
    why = f"dead-lettered ({reason or 'no reason given'}): {description or ''}".strip().rstrip(":")
    if queue == runtime.settings.job_events_queue:
        return _job_event(runtime, body, why)
    try:
        message = StepMessage.model_validate_json(body)
    except ValidationError:
        log.error(
            "unreadable dead letter", extra={"action": "dead_letter_unreadable", "queue": queue, "body": body[:500]}
        )
        return "unreadable"
    settings = runtime.settings
    with runtime.sessions() as session, session.begin():
        step = session.scalars(
            select(ProcessingStep).where(ProcessingStep.id == message.step_id).with_for_update()
        ).one_or_none()
        if step is None or step.status == "completed" or step.retry_count != message.attempt:
            outcome: Handled = "step_obsolete"
        else:
            step.status = "failed"
            step.retryable = False
            step.lease_expires_at = None
            step.error_message = why
            step.updated_at = utcnow()
            event = JobEvent(
                job_id=message.job_id, kind="step_dead_lettered", step_type=message.step_type, attempt=message.attempt
            )
            runtime.bus.stage(
                session, settings.job_events_queue, message_id=event.message_id, body=event.model_dump_json()
            )
            outcome = "step_failed"
    publish_committed(runtime.bus)
    log.warning(
        "dead letter handled: %s",
        outcome,
        extra={
            "action": "dead_letter_handled",
            "outcome": outcome,
            "queue": queue,
            "job_id": str(message.job_id),
            "step_type": message.step_type,
            "attempt": message.attempt,
            "reason": reason,
        },
    )
    return outcome


def _job_event(runtime: Runtime, body: str, why: str) -> Handled:
    try:
        event = JobEvent.model_validate_json(body)
    except ValidationError:
        log.error("unreadable dead letter", extra={"action": "dead_letter_unreadable", "body": body[:500]})
        return "unreadable"
    webhook_id = None
    batch_webhooks: list[uuid.UUID] = []
    with runtime.sessions() as session, session.begin():
        job = get_job(session=session, job_id=event.job_id, for_update=True)
        if job is None:
            outcome: Handled = "job_obsolete"
        else:
            lost = Event(kind="event_dead_lettered", reason=f"{event.kind}: {why}")
            applied = decide(session, settings=runtime.settings, job=job, event=lost)
            runtime.bus.stage_many(session, applied.messages)
            webhook_id = applied.webhook_id
            if applied.decision.notify:
                batch_webhooks = close_batches(session, settings=runtime.settings, batch_ids=[job.batch_id])
            outcome = "job_failed" if applied.decision.job_status == "failed" else "job_obsolete"
    deliver_now(runtime, [webhook_id, *batch_webhooks] if webhook_id is not None else batch_webhooks)
    log.warning(
        "dead letter handled: %s",
        outcome,
        extra={"action": "dead_letter_handled", "outcome": outcome, "job_id": str(event.job_id), "event": event.kind},
    )
    return outcome


def dead_letter_consumers(runtime: Runtime, *, shutdown: Shutdown | None = None) -> list[Consumer]:
    """A consumer of every queue's dead-letter sub-queue (the local host's component). A dead letter
    that cannot be accounted for now (the database is away) is left locked and looked at again when
    its lock lapses, rather than taken again at once."""
    shutdown = shutdown or Shutdown(runtime.settings.shutdown_grace_seconds)
    return [
        Consumer(runtime, queue, _account_for(queue), dead_letter=True, on_failure="leave", shutdown=shutdown)
        for queue in all_queues(runtime.settings)
    ]


def _account_for(queue: str) -> Handler:
    def account(delivery: Delivery) -> Settlement:
        message = delivery.message
        handle_dead_letter(
            delivery.runtime,
            queue=queue,
            body=message.body,
            reason=message.dead_letter_reason,
            description=message.dead_letter_description,
        )
        return "complete"

    return account


def drain_dead_letters(runtime: Runtime, *, max_wait: float = 0.0) -> int:
    """Handle what is in every queue's dead-letter sub-queue now; returns how many were handled."""
    handled = 0
    for consumer in dead_letter_consumers(runtime):
        while consumer.poll_once(max_wait=max_wait):
            handled += 1
    return handled


def run_consumer(runtime: Runtime, shutdown: Shutdown) -> None:
    """Consume every dead-letter sub-queue until the shutdown is requested."""
    serve(dead_letter_consumers(runtime, shutdown=shutdown), shutdown=shutdown)
