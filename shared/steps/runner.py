"""Running one step: claim it (shared/steps/claims.py), work on it with its lease and message lock kept
alive, write the typed result to its deterministic blob path before the step is marked completed, and
record the completion or failure with the job event it causes (docs/ARCHITECTURE.md, rules 1–3).

Used by every step consumer (shared/worker/step_handler.py) and by the azure-ai-jobs function alike.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from opentelemetry.trace import SpanKind
from sqlalchemy.orm import Session

from shared.core.errors import Cancelled, LeaseLost, MessageLockLost, PermanentError, ShutdownRequested
from shared.core.logs import log_context
from shared.core.tracing import mark_error, span
from shared.domain.messages import StepMessage, result_blob_path
from shared.domain.registry import known, spec_of
from shared.runtime import Runtime, metrics
from shared.steps.claims import Claim, Refusal, claim_step, finish_step, release_step, renew_lease
from shared.steps.context import StepContext
from shared.steps.outputs import finish_result

log = logging.getLogger(__name__)

__all__ = [
    "Claim",
    "LeaseKeeper",
    "Outcome",
    "Refusal",
    "StepContext",
    "claim_step",
    "finish_step",
    "release_step",
    "renew_lease",
    "run_step",
]


class LeaseKeeper:
    """Renews the step lease (and, where given, the message lock) on a background thread every
    third of the lock duration, until stopped. `lost` is set if the claim was taken from us: the
    step's context reads it (should_stop), so the work stops at its next check."""

    def __init__(
        self,
        runtime: Runtime,
        claim: Claim,
        *,
        renew_message_lock: Callable[[], object] | None = None,
        lost: threading.Event | None = None,
    ) -> None:
        self._runtime = runtime
        self._claim = claim
        self._renew_message_lock = renew_message_lock
        self._stop = threading.Event()
        self.lost = lost if lost is not None else threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{claim.step_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        interval = max(0.05, self._runtime.settings.lock_duration_seconds / 3)
        while not self._stop.wait(interval):
            try:
                # The lease first: a lost message lock must not keep the step's lease from renewal.
                if not renew_lease(self._runtime, self._claim):
                    self.lost.set()
                    log.warning(
                        "step taken over by another worker",
                        extra={"action": "lease_lost", "job_id": str(self._claim.job.id)},
                    )
                    return
                if self._renew_message_lock is not None:
                    self._renew_message_lock()
            except MessageLockLost:
                log.warning("message lock lost", extra={"action": "lock_lost", "job_id": str(self._claim.job.id)})
            except Exception:
                log.exception("lease renewal failed", extra={"action": "lease_renew_failed"})


Outcome = Literal["completed", "failed", "settled", "busy", "released", "lost"]


def run_step(
    runtime: Runtime,
    message: StepMessage,
    processor: Callable[[StepContext], dict[str, Any]],
    *,
    worker_id: str,
    renew_message_lock: Callable[[], object] | None = None,
    shutdown_requested: Callable[[], bool] | None = None,
    settle_in: Callable[[Session], object] | None = None,
) -> Outcome:
    """Claim, process, write the result, complete — or record the failure. The returned outcome says
    how the message should be settled: "busy" is left to its lock, "released" is abandoned (another
    worker takes the step at once), everything else is acknowledged.

    The run is one span continuing the message's trace; every log line inside carries job_id, step_type
    and attempt; its outcome and duration are counted in the speechflow_step* metrics."""
    extra = {"job_id": str(message.job_id), "step_type": message.step_type, "attempt": message.attempt}
    with (
        log_context(**extra),
        span(
            f"step {message.step_type}",
            traceparent=message.traceparent,
            kind=SpanKind.CONSUMER,
            attributes={"speechflow.job_id": extra["job_id"], "speechflow.step_type": message.step_type},
        ) as current,
    ):
        current.set_attribute("speechflow.attempt", message.attempt)
        outcome = _run_step(
            runtime,
            message,
            processor,
            worker_id=worker_id,
            renew_message_lock=renew_message_lock,
            shutdown_requested=shutdown_requested,
            settle_in=settle_in,
            extra=extra,
        )
        current.set_attribute("speechflow.outcome", outcome)
        if outcome == "failed":
            mark_error(current, "step failed")
        return outcome


def _run_step(
    runtime: Runtime,
    message: StepMessage,
    processor: Callable[[StepContext], dict[str, Any]],
    *,
    worker_id: str,
    renew_message_lock: Callable[[], object] | None,
    shutdown_requested: Callable[[], bool] | None,
    settle_in: Callable[[Session], object] | None,
    extra: dict[str, Any],
) -> Outcome:
    claim = claim_step(runtime, message, worker_id=worker_id)
    if isinstance(claim, Refusal):
        log.info("step not claimed: %s", claim.reason, extra={"action": "claim_refused", **extra})
        outcome: Outcome = "settled" if claim.settle else "busy"
        metrics.record_step(message.step_type, outcome)
        return outcome

    log.info("step claimed", extra={"action": "step_started", "worker": worker_id, **extra})
    if claim.retry_count > 0:
        metrics.record_retry(claim.step_type)
    context = StepContext(runtime=runtime, claim=claim)
    if shutdown_requested is not None:
        context.shutdown_requested = shutdown_requested
    context.settle_in = settle_in
    started = time.perf_counter()
    with LeaseKeeper(runtime, claim, renew_message_lock=renew_message_lock, lost=context.lease_lost):
        try:
            path = _work(runtime, processor, context)
        except Exception as error:
            outcome = _stopped(runtime, claim, context, error, extra=extra)
            metrics.record_step(claim.step_type, outcome, seconds=time.perf_counter() - started)
            return outcome
    elapsed = time.perf_counter() - started
    context.details.setdefault("processing_seconds", round(elapsed, 3))
    done = finish_step(
        runtime,
        claim,
        status="completed",
        result_path=path,
        details=context.details,
        job_updates=context.job_updates,
        settle_in=context.settle_in,
    )
    log.info(
        "step completed" if done else "step taken over by another worker",
        extra={"action": "step_completed" if done else "step_lost", **extra},
    )
    outcome = "completed" if done else "lost"
    metrics.record_step(claim.step_type, outcome, seconds=elapsed, details=context.details)
    return outcome


def _work(runtime: Runtime, processor: Callable[[StepContext], dict[str, Any]], context: StepContext) -> str:
    """Run the processor and write its JSON result to the step's deterministic path; returns that path."""
    result = processor(context)
    if context.lease_lost.is_set():
        raise LeaseLost("the step was taken over while it was worked on")
    path = result_blob_path(context.job.id, context.step_type)
    runtime.blobs.put(
        runtime.settings.results_container,
        path,
        json.dumps(result, ensure_ascii=False).encode("utf-8"),
        content_type="application/json",
    )
    return path


def _stopped(
    runtime: Runtime, claim: Claim, context: StepContext, error: Exception, *, extra: dict[str, Any]
) -> Outcome:
    """Record how the work ended early: handed back, failed for good, or failed to be retried."""
    if context.lease_lost.is_set():
        # Whatever the work ended with, the step is another worker's now: record nothing, so that the
        # new holder's result and completion are the only ones (docs/RELIABILITY.md, fencing token).
        log.warning("step taken over by another worker; nothing recorded", extra={"action": "step_lost", **extra})
        return "lost"
    if isinstance(error, ShutdownRequested):
        released = release_step(runtime, claim)
        log.info("step handed back at shutdown", extra={"action": "step_released", **extra})
        return "released" if released else "lost"
    if isinstance(error, (Cancelled, PermanentError)):
        return _failed(runtime, claim, context, str(error), retryable=False, extra=extra)
    log.error("step failed", exc_info=error, extra={"action": "step_error", **extra})
    reason = f"{error.__class__.__name__}: {error}"
    return _failed(runtime, claim, context, reason, retryable=True, extra=extra)


def _failed(
    runtime: Runtime,
    claim: Claim,
    context: StepContext,
    error: str,
    *,
    retryable: bool,
    extra: dict[str, Any],
) -> Outcome:
    done = finish_step(
        runtime,
        claim,
        status="failed",
        details=context.details,
        error=error,
        retryable=retryable,
        settle_in=context.settle_in,
    )
    log.warning(
        "step failed: %s",
        error,
        extra={"action": "step_failed", "retryable": retryable, **extra},
    )
    return "failed" if done else "lost"


def processor_for(step_type: str) -> Callable[[StepContext], dict[str, object]] | None:
    """The processor of a step type (or of its part) as the step runner calls it — its typed result as
    JSON-ready data — or None when no step of that name is registered."""
    if not known(step_type):
        return None
    process = spec_of(step_type).process

    def run(step: StepContext) -> dict[str, object]:
        return finish_result(step, process(step)).model_dump(mode="json", exclude_none=True)

    return run
