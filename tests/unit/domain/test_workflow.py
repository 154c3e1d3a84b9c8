"""The workflow state machine, every workflow × event, with no I/O."""

from __future__ import annotations

import pytest

from shared.domain.workflow import (
    WORKFLOW_TYPES,
    WORKFLOWS,
    Event,
    JobState,
    StepState,
    can_cancel,
    next_decision,
    retry_delay,
    translation_skip_reason,
)

MAX_RETRIES = 3
BACKOFF = 2.0


def decide(job: JobState, steps: dict[str, StepState], event: Event):
    return next_decision(job=job, steps=steps, event=event, max_retries=MAX_RETRIES, backoff_seconds=BACKOFF)


def job(workflow: str, status: str = "processing", **kw) -> JobState:
    kw.setdefault("source_language", None if workflow in ("full_pipeline", "lid_only") else "fra")
    return JobState(workflow_type=workflow, status=status, **kw)


def uploaded_steps(workflow: str) -> tuple[str, ...]:
    """The steps of a job whose audio was uploaded, with no options: FETCH is only for jobs created with
    audio_url, DIARIZE only for jobs that ask for speakers, REDACT_AUDIO only for redact_pii_audio."""
    return tuple(step for step in WORKFLOWS[workflow].steps if step not in ("FETCH", "DIARIZE", "REDACT_AUDIO"))


def done(*names: str) -> dict[str, StepState]:
    return {name: StepState(name, "completed") for name in names}


def failed(name: str, retry_count: int = 0, *, retryable: bool = True, error: str = "boom") -> StepState:
    return StepState(name, "failed", retry_count=retry_count, retryable=retryable, error_message=error)


@pytest.mark.parametrize("workflow", WORKFLOW_TYPES)
def test_started_dispatches_first_step_and_marks_processing(workflow: str) -> None:
    decision = decide(job(workflow, "queued"), {}, Event("job_started"))
    assert decision.dispatch is not None
    assert decision.dispatch.step_type == uploaded_steps(workflow)[0]
    assert decision.dispatch.attempt == 0
    assert decision.dispatch.delay_seconds == 0
    assert decision.job_status == "processing"
    assert not decision.notify


@pytest.mark.parametrize("workflow", WORKFLOW_TYPES)
def test_redelivered_start_does_not_dispatch_twice(workflow: str) -> None:
    first = uploaded_steps(workflow)[0]
    decision = decide(job(workflow, "processing"), {first: StepState(first, "pending")}, Event("job_started"))
    assert decision.is_noop


@pytest.mark.parametrize("workflow", WORKFLOW_TYPES)
def test_each_completion_dispatches_the_next_step_then_completes(workflow: str) -> None:
    language = {"detected_language": "fra"}
    sequence = uploaded_steps(workflow)
    for index, step_type in enumerate(sequence):
        state = job(workflow, **language)
        decision = decide(state, done(*sequence[: index + 1]), Event("step_completed", step_type))
        if index + 1 < len(sequence):
            assert decision.dispatch is not None and decision.dispatch.step_type == sequence[index + 1]
            assert decision.job_status is None
        else:
            assert decision.dispatch is None
            assert decision.job_status == "completed"
            assert decision.notify


def test_full_pipeline_skips_translation_for_english() -> None:
    decision = decide(
        job("full_pipeline", detected_language="eng"), done("LID", "TRANSCRIBE"), Event("step_completed", "TRANSCRIBE")
    )
    assert [skip.step_type for skip in decision.skips] == ["TRANSLATE"]
    assert "English" in decision.skips[0].reason
    assert decision.dispatch is not None and decision.dispatch.step_type == "SUMMARIZE"


def test_full_pipeline_translates_non_english() -> None:
    decision = decide(
        job("full_pipeline", detected_language="cmn"), done("LID", "TRANSCRIBE"), Event("step_completed", "TRANSCRIBE")
    )
    assert decision.skips == ()
    assert decision.dispatch is not None and decision.dispatch.step_type == "TRANSLATE"


def test_translation_skip_honours_target_language() -> None:
    assert translation_skip_reason(JobState("full_pipeline", "processing", detected_language="fra")) is None
    assert translation_skip_reason(
        JobState("full_pipeline", "processing", detected_language="fra", target_language="fra")
    )
    assert translation_skip_reason(JobState("full_pipeline", "processing", detected_language="eng")) is not None
    assert translation_skip_reason(JobState("full_pipeline", "processing")) is None


@pytest.mark.parametrize("workflow", WORKFLOW_TYPES)
@pytest.mark.parametrize("retry_count", [0, 1, 2])
def test_transient_failure_retries_with_exponential_backoff(workflow: str, retry_count: int) -> None:
    first = uploaded_steps(workflow)[0]
    decision = decide(job(workflow), {first: failed(first, retry_count)}, Event("step_failed", first, retry_count))
    assert decision.dispatch is not None
    assert decision.dispatch.step_type == first
    assert decision.dispatch.attempt == retry_count + 1
    assert decision.dispatch.is_retry
    assert decision.dispatch.delay_seconds == pytest.approx(BACKOFF * 2**retry_count)
    assert decision.job_status is None


@pytest.mark.parametrize("workflow", ["transcribe_only", "lid_only", "translate_only", "summarize_only"])
def test_retries_exhausted_fails_the_job(workflow: str) -> None:
    first = uploaded_steps(workflow)[0]
    decision = decide(job(workflow), {first: failed(first, MAX_RETRIES)}, Event("step_failed", first, MAX_RETRIES))
    assert decision.dispatch is None
    assert decision.job_status == "failed"
    assert decision.notify
    assert decision.error_message == f"{first} failed: boom"


@pytest.mark.parametrize("workflow", WORKFLOW_TYPES)
def test_permanent_failure_is_never_retried(workflow: str) -> None:
    first = uploaded_steps(workflow)[0]
    step = failed(first, 0, retryable=False, error="not an audio file")
    decision = decide(job(workflow), {first: step}, Event("step_failed", first, 0))
    assert decision.dispatch is None
    assert decision.job_status == "failed"
    assert "not an audio file" in (decision.error_message or "")


@pytest.mark.parametrize("optional", ["TRANSLATE", "SUMMARIZE"])
def test_full_pipeline_optional_failure_is_partial_complete(optional: str) -> None:
    state = job("full_pipeline", detected_language="cmn")
    steps = done("LID", "TRANSCRIBE", "TRANSLATE", "SUMMARIZE")
    steps[optional] = failed(optional, MAX_RETRIES, error="service unavailable")
    decision = decide(state, steps, Event("step_failed", optional, MAX_RETRIES))
    assert decision.job_status == "partial_complete"
    assert decision.notify
    assert decision.failed_steps == (optional,)


def test_full_pipeline_failed_translation_still_summarizes() -> None:
    steps = done("LID", "TRANSCRIBE")
    steps["TRANSLATE"] = failed("TRANSLATE", 0, retryable=False, error="content filter")
    decision = decide(job("full_pipeline", detected_language="cmn"), steps, Event("step_failed", "TRANSLATE"))
    assert decision.dispatch is not None and decision.dispatch.step_type == "SUMMARIZE"
    assert decision.job_status is None


@pytest.mark.parametrize("essential", ["LID", "TRANSCRIBE"])
def test_full_pipeline_essential_failure_fails_job(essential: str) -> None:
    steps = done("LID") if essential == "TRANSCRIBE" else {}
    steps[essential] = failed(essential, MAX_RETRIES)
    decision = decide(job("full_pipeline"), steps, Event("step_failed", essential, MAX_RETRIES))
    assert decision.job_status == "failed"


@pytest.mark.parametrize("workflow", WORKFLOW_TYPES)
def test_dead_lettered_step_fails_without_retry(workflow: str) -> None:
    first = uploaded_steps(workflow)[0]
    decision = decide(job(workflow), {first: StepState(first, "processing")}, Event("step_dead_lettered", first, 0))
    assert decision.dead_lettered_step == first
    assert decision.dispatch is None
    assert decision.job_status == "failed"


def test_stale_dead_letter_of_an_older_attempt_is_ignored() -> None:
    steps = {"TRANSCRIBE": StepState("TRANSCRIBE", "processing", retry_count=1)}
    decision = decide(job("transcribe_only"), steps, Event("step_dead_lettered", "TRANSCRIBE", 0))
    assert decision.dead_lettered_step is None
    assert decision.is_noop


@pytest.mark.parametrize("workflow", WORKFLOW_TYPES)
@pytest.mark.parametrize("status", ["completed", "partial_complete", "failed", "cancelled"])
@pytest.mark.parametrize("kind", ["job_started", "step_completed", "step_failed", "step_dead_lettered"])
def test_terminal_jobs_never_change(workflow: str, status: str, kind: str) -> None:
    first = uploaded_steps(workflow)[0]
    decision = decide(job(workflow, status), {first: failed(first)}, Event(kind, first))  # type: ignore[arg-type]
    assert decision.is_noop
    assert not decision.notify


def test_cancelled_before_routing_runs_no_step() -> None:
    decision = decide(job("full_pipeline", "cancelled"), {}, Event("job_started"))
    assert decision.dispatch is None


def test_pending_upload_is_not_routed() -> None:
    assert decide(job("lid_only", "pending_upload"), {}, Event("job_started")).is_noop


def test_event_for_a_step_outside_the_workflow_is_ignored() -> None:
    assert decide(job("lid_only"), {}, Event("step_completed", "TRANSLATE")).is_noop


def test_waiting_while_a_step_runs() -> None:
    decision = decide(
        job("full_pipeline"),
        {"LID": StepState("LID", "processing")},
        Event("step_completed", "LID"),
    )
    assert decision.is_noop


def test_unknown_workflow_fails() -> None:
    decision = decide(JobState("dance_only", "queued"), {}, Event("job_started"))
    assert decision.job_status == "failed"


def test_cancel_until_the_job_ends() -> None:
    assert can_cancel("pending_upload") and can_cancel("queued") and can_cancel("processing")
    assert not any(can_cancel(s) for s in ("completed", "failed", "cancelled", "partial_complete"))


def test_retry_delay_doubles() -> None:
    assert [retry_delay(n, base_seconds=1.5) for n in range(4)] == [1.5, 3.0, 6.0, 12.0]


def test_redacted_audio_runs_after_the_transcript_beside_the_translation() -> None:
    options = {"redact_pii": True, "redact_pii_audio": True}
    state = job("full_pipeline", detected_language="fra", options=options)

    after_transcript = decide(state, done("LID", "TRANSCRIBE"), Event("step_completed", "TRANSCRIBE"))

    assert {dispatch.step_type for dispatch in after_transcript.dispatches} == {"TRANSLATE", "REDACT_AUDIO"}
    steps = {
        **done("LID", "TRANSCRIBE", "TRANSLATE", "SUMMARIZE"),
        "REDACT_AUDIO": failed("REDACT_AUDIO", retryable=False),
    }
    ended = decide(state, steps, Event("step_failed", "REDACT_AUDIO"))
    assert ended.job_status == "partial_complete"  # the transcript and the rest stay
