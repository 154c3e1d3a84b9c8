"""Running one step: the atomic claim (DESIGN.md rule 2), the lease kept alive while working, the
result written to its deterministic blob path before the step is marked completed (rule 3), and the
completion or failure committed together with the job event it causes (rule 1).

Used by the long-lived workers (gpu_worker.base_worker) and by the azure-ai-jobs function alike.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from opentelemetry.trace import SpanKind
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from shared import metrics
from shared.bus import publish_committed
from shared.errors import Cancelled, LeaseLost, MessageLockLost, PermanentError, ShutdownRequested
from shared.jobs import JobSnapshot
from shared.logs import log_context
from shared.messages import JobEvent, StepMessage, result_blob_path
from shared.models import Job, ProcessingStep, utcnow
from shared.runtime import Runtime
from shared.tracing import current_traceparent, mark_error, span, trace_properties

log = logging.getLogger(__name__)

ACTIVE_JOB_STATUSES = ("queued", "processing")


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


@dataclass
class StepContext:
    """What a step's processor gets: the job, its inputs and a place for its outputs."""

    runtime: Runtime
    claim: Claim
    details: dict[str, Any] = field(default_factory=dict)
    """Recorded on the step: model, device, durations, usage, …"""
    job_updates: dict[str, Any] = field(default_factory=dict)
    """Columns of the job to set when the step completes (detected_language, …)."""
    shutdown_requested: Callable[[], bool] = field(default=lambda: False, repr=False)
    """True once the worker's shutdown grace period is over: stop at the next boundary and raise
    ShutdownRequested, and the step is handed back for another worker."""
    settle_in: Callable[[Session], object] | None = field(default=None, repr=False)
    """Settles the step's message in the transaction that finishes the step (see MessageBus.complete_in)."""
    lease_lost: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set once a renewal finds the claim no longer ours: another worker has taken the step over."""
    _last_progress_write: float = field(default=0.0, repr=False)
    _last_cancel_check: float = field(default=0.0, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    @property
    def job(self) -> JobSnapshot:
        return self.claim.job

    @property
    def step_type(self) -> str:
        return self.claim.step_type

    @property
    def settings(self) -> Any:
        return self.runtime.settings

    @contextmanager
    def input_file(self) -> Iterator[Path]:
        """The job's uploaded input (audio, or a transcript), streamed to a temporary file."""
        blob = self.job.audio_blob_path
        if not blob:
            raise PermanentError("the job has no uploaded input")
        suffix = Path(self.job.audio_filename).suffix[:16]
        with tempfile.TemporaryDirectory(prefix="speechflow-") as folder:
            path = Path(folder) / f"input{suffix}"
            self.runtime.blobs.download_to(self.settings.audio_container, blob, path)
            yield path

    def put_result_file(self, extension: str, data: bytes | str, *, content_type: str) -> str:
        """Write results/{job_id}/{step}.{extension}; returns the blob path. Refused once the step
        has been taken over: its new holder writes these paths now."""
        if self.lease_lost.is_set():
            raise LeaseLost(f"{self.step_type} of job {self.job.id} was taken over by another worker")
        path = result_blob_path(self.job.id, self.step_type, extension)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        self.runtime.blobs.put(self.settings.results_container, path, payload, content_type=content_type)
        return path

    def read_result(self, step_type: str, *, job_id: uuid.UUID | None = None) -> dict[str, Any]:
        """The JSON result of an earlier step of this job (or of another job)."""
        path = result_blob_path(job_id or self.job.id, step_type)
        data: dict[str, Any] = json.loads(self.runtime.blobs.get(self.settings.results_container, path))
        return data

    def report_progress(self, fraction: float) -> None:
        """Record progress (0..1); written at most once a second."""
        now = time.monotonic()
        if now - self._last_progress_write < 1.0 and fraction < 1.0:
            return
        self._last_progress_write = now
        if not renew_lease(self.runtime, self.claim, progress=fraction):
            self.lease_lost.set()

    @property
    def shutting_down(self) -> bool:
        return self.shutdown_requested()

    def should_stop(self) -> bool:
        """True once the job has been cancelled (checked at most every 2 s), the worker's shutdown
        grace period is over, or another worker has taken the step over; processors ask it between
        segments or chunks."""
        if self.shutdown_requested() or self.lease_lost.is_set():
            return True
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= 2.0:
            self._last_cancel_check = now
            self._cancelled = job_is_cancelled(self.runtime, self.job.id)
        return self._cancelled


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
