"""The workflow state machine as one pure function: (workflow, job, steps, event) → decision.

No I/O here. The router loads the state, asks `next_decision`, and applies what it says in one
transaction. Decisions are computed from the state, not from the event alone, so a redelivered or
stale event yields the same (or an empty) decision: at-least-once delivery, exactly-once effects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from shared.messages import StepType

WorkflowType = Literal["full_pipeline", "transcribe_only", "lid_only", "translate_only", "summarize_only"]
WORKFLOW_TYPES: tuple[str, ...] = get_args(WorkflowType)

WORKFLOWS: Mapping[str, tuple[StepType, ...]] = {
    "full_pipeline": ("LID", "TRANSCRIBE", "TRANSLATE", "SUMMARIZE"),
    "transcribe_only": ("TRANSCRIBE",),
    "lid_only": ("LID",),
    "translate_only": ("TRANSLATE",),
    "summarize_only": ("SUMMARIZE",),
}

# Steps whose final failure leaves the job partial_complete instead of failed: the transcript exists.
OPTIONAL_STEPS: Mapping[str, frozenset[str]] = {"full_pipeline": frozenset({"TRANSLATE", "SUMMARIZE"})}

# Workflows whose input is audio (uploaded through upload_url); the others take a transcript.
AUDIO_WORKFLOWS = frozenset({"full_pipeline", "transcribe_only", "lid_only"})
NEEDS_SOURCE_LANGUAGE = frozenset({"transcribe_only", "translate_only", "summarize_only"})

CANCELLABLE_STATUSES = frozenset({"pending_upload", "queued", "processing"})
TERMINAL_STATUSES = frozenset({"completed", "partial_complete", "failed", "cancelled"})
_ENGLISH = frozenset({"en", "eng", "english"})


@dataclass(frozen=True)
class JobState:
    workflow_type: str
    status: str
    source_language: str | None = None
    detected_language: str | None = None
    target_language: str | None = "en"


@dataclass(frozen=True)
class StepState:
    step_type: str
    status: str
    retry_count: int = 0
    retryable: bool = True
    error_message: str | None = None


EventKind = Literal["job_started", "step_completed", "step_failed", "step_dead_lettered"]


@dataclass(frozen=True)
class Event:
    kind: EventKind
    step_type: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class Dispatch:
    """Send this step to its worker queue: a new step (attempt 0) or a retry of a failed one."""

    step_type: StepType
    attempt: int
    delay_seconds: float = 0.0

    @property
    def is_retry(self) -> bool:
        return self.attempt > 0


@dataclass(frozen=True)
class Skip:
    """Record the step as done without running it, and why."""

    step_type: StepType
    reason: str


@dataclass(frozen=True)
class Decision:
    dispatch: Dispatch | None = None
    skips: tuple[Skip, ...] = ()
    job_status: str | None = None
    """The job's new status, or None to leave it."""
    error_message: str | None = None
    dead_lettered_step: str | None = None
    """A step whose message was dead-lettered: record it failed, no retry."""
    notify: bool = False
    """Tell the client (callback) about the job's terminal status."""
    reason: str = ""
    failed_steps: tuple[str, ...] = field(default=())

    @property
    def is_noop(self) -> bool:
        return self.dispatch is None and not self.skips and self.job_status is None


def retry_delay(retry_count: int, *, base_seconds: float) -> float:
    """Exponential backoff before retry number retry_count + 1."""
    return float(base_seconds * (2**retry_count))


def translation_skip_reason(job: JobState) -> str | None:
    """Why full_pipeline needs no TRANSLATE step for this job, or None if it does."""
    language = (job.detected_language or job.source_language or "").lower()
    target = (job.target_language or "en").lower()
    if not language:
        return None
    if language in _ENGLISH and target in _ENGLISH:
        return "source language is English"
    if language == target:
        return f"source language is already the target language ({target})"
    return None


def can_cancel(status: str) -> bool:
    return status in CANCELLABLE_STATUSES


def next_decision(
    *,
    job: JobState,
    steps: Mapping[str, StepState],
    event: Event,
    max_retries: int,
    backoff_seconds: float,
) -> Decision:
    """What the router does next for this job, given everything it knows."""
    sequence = WORKFLOWS.get(job.workflow_type)
    if sequence is None:
        return Decision(
            job_status="failed",
            error_message=f"unknown workflow_type {job.workflow_type!r}",
            notify=True,
            reason="unknown workflow",
        )
    if job.status in TERMINAL_STATUSES:
        return Decision(reason=f"job already {job.status}")
    if job.status == "pending_upload":
        return Decision(reason="job not started")
    if event.step_type is not None and event.step_type not in sequence:
        return Decision(reason=f"{event.step_type} is not a step of {job.workflow_type}")

    states = dict(steps)
    dead_lettered: str | None = None
    if event.kind == "step_dead_lettered" and event.step_type in states:
        current = states[event.step_type]
        if current.status != "completed" and current.retry_count == event.attempt:
            dead_lettered = event.step_type
            states[dead_lettered] = StepState(
                step_type=dead_lettered,
                status="failed",
                retry_count=current.retry_count,
                retryable=False,
                error_message=current.error_message or "message dead-lettered after repeated delivery failures",
            )

    optional = OPTIONAL_STEPS.get(job.workflow_type, frozenset())
    starting = job.status == "queued"
    skips: list[Skip] = []
    failed_optional: list[str] = []

    for step_type in sequence:
        state = states.get(step_type)
        if state is None:
            if step_type == "TRANSLATE" and job.workflow_type == "full_pipeline":
                skip_reason = translation_skip_reason(job)
                if skip_reason is not None:
                    skips.append(Skip(step_type, skip_reason))
                    continue
            return Decision(
                dispatch=Dispatch(step_type, attempt=0),
                skips=tuple(skips),
                job_status="processing" if starting else None,
                dead_lettered_step=dead_lettered,
                reason=f"dispatch {step_type}",
            )
        if state.status in ("pending", "processing"):
            return Decision(
                job_status="processing" if starting else None,
                dead_lettered_step=dead_lettered,
                reason=f"waiting for {step_type}",
            )
        if state.status == "completed":
            continue
        # failed
        if state.retryable and state.retry_count < max_retries:
            return Decision(
                dispatch=Dispatch(
                    step_type,
                    attempt=state.retry_count + 1,
                    delay_seconds=retry_delay(state.retry_count, base_seconds=backoff_seconds),
                ),
                dead_lettered_step=dead_lettered,
                reason=f"retry {step_type} ({state.retry_count + 1}/{max_retries})",
            )
        if step_type in optional:
            failed_optional.append(step_type)
            continue
        return Decision(
            job_status="failed",
            error_message=f"{step_type} failed: {state.error_message or 'unknown error'}",
            dead_lettered_step=dead_lettered,
            notify=True,
            failed_steps=(*failed_optional, step_type),
            reason=f"{step_type} failed for good",
        )

    if failed_optional:
        return Decision(
            skips=tuple(skips),
            job_status="partial_complete",
            error_message="; ".join(
                f"{name} failed: {states[name].error_message or 'unknown error'}" for name in failed_optional
            ),
            dead_lettered_step=dead_lettered,
            notify=True,
            failed_steps=tuple(failed_optional),
            reason="finished with failed optional steps",
        )
    return Decision(
        skips=tuple(skips),
        job_status="completed",
        dead_lettered_step=dead_lettered,
        notify=True,
        reason="all steps completed",
    )
