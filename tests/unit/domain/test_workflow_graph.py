"""The workflow as a dependency graph: side-by-side branches, a join, fan-out into parts, and the job's
lifecycle events — over a workflow built for the test, with no I/O."""

from __future__ import annotations

from shared.domain.workflow import (
    MAX_PARTS,
    Decision,
    Event,
    JobState,
    Node,
    StepState,
    Workflow,
    chain,
    chunk_count,
    next_decision,
    part_name,
    split_part,
)

# A splits into B (required) and C (optional) side by side; D joins them.
MEETING = Workflow(
    (
        Node("A"),
        Node("B", after=("A",)),
        Node("C", after=("A",), optional=True),
        Node("D", after=("B", "C")),
    )
)
# X fans out into one part per started minute of audio, then joins; Y follows.
FANNED = Workflow(
    (
        Node("X", parts=lambda job: int((job.audio_duration_seconds or 0) // 60) + 1),
        Node("Y", after=("X",)),
    )
)
GATED = chain(Node("A"), Node("G", include_when=lambda job: bool(job.options.get("extra"))), Node("B"))
TABLE = {"meeting": MEETING, "fanned": FANNED, "gated": GATED}


def decide(steps: dict[str, StepState], event: Event, *, workflow: str = "meeting", **job: object) -> Decision:
    state = JobState(workflow_type=workflow, status=str(job.pop("status", "processing")), **job)  # type: ignore[arg-type]
    return next_decision(job=state, steps=steps, event=event, max_retries=3, backoff_seconds=2.0, workflows=TABLE)


def done(*names: str) -> dict[str, StepState]:
    return {name: StepState(name, "completed") for name in names}


def running(*names: str) -> dict[str, StepState]:
    return {name: StepState(name, "processing") for name in names}


def failed(name: str, retry_count: int = 0, *, retryable: bool = True) -> dict[str, StepState]:
    return {name: StepState(name, "failed", retry_count=retry_count, retryable=retryable, error_message="boom")}


def dispatched(decision: Decision) -> list[tuple[str, int]]:
    return [(dispatch.step_type, dispatch.attempt) for dispatch in decision.dispatches]


def test_independent_steps_are_dispatched_together() -> None:
    decision = decide(done("A"), Event("step_completed", "A"))

    assert dispatched(decision) == [("B", 0), ("C", 0)]
    assert decision.job_status is None


def test_join_waits_for_every_branch() -> None:
    assert decide({**done("A", "B"), **running("C")}, Event("step_completed", "B")).is_noop
    decision = decide(done("A", "B", "C"), Event("step_completed", "C"))
    assert dispatched(decision) == [("D", 0)]


def test_a_retry_of_one_branch_leaves_the_other_alone() -> None:
    decision = decide({**done("A"), **running("B"), **failed("C", 1)}, Event("step_failed", "C", attempt=1))

    assert dispatched(decision) == [("C", 2)]
    assert decision.dispatches[0].delay_seconds == 4.0
    assert decision.job_status is None


def test_final_failure_of_an_optional_branch_still_joins_and_ends_partial() -> None:
    steps = {**done("A", "B"), **failed("C", 3)}
    decision = decide(steps, Event("step_failed", "C", attempt=3))
    assert dispatched(decision) == [("D", 0)]

    end = decide({**steps, **done("D")}, Event("step_completed", "D"))
    assert end.job_status == "partial_complete"
    assert end.failed_steps == ("C",)
    assert end.notify
    assert "C failed: boom" in (end.error_message or "")


def test_final_failure_of_a_required_branch_fails_the_job_while_the_other_runs() -> None:
    decision = decide({**done("A"), **failed("B", 0, retryable=False), **running("C")}, Event("step_failed", "B"))

    assert decision.job_status == "failed"
    assert decision.failed_steps == ("B",)
    assert not decision.dispatches


def test_cancel_while_both_branches_run_then_their_events_change_nothing() -> None:
    steps = {**done("A"), **running("B", "C")}
    decision = decide(steps, Event("cancel_requested"))
    assert decision.job_status == "cancelled"
    assert decision.notify
    assert not decision.dispatches

    late = decide({**steps, **done("B")}, Event("step_completed", "B"), status="cancelled")
    assert late.is_noop
    again = decide(steps, Event("cancel_requested"), status="cancelled")
    assert again.refused and again.is_noop


def test_cancel_before_start_and_after_the_end() -> None:
    assert decide({}, Event("cancel_requested"), status="pending_upload").job_status == "cancelled"
    assert decide(done("A", "B", "C", "D"), Event("cancel_requested"), status="completed").refused


def test_redelivered_event_dispatches_nothing_twice() -> None:
    steps = {**done("A"), "B": StepState("B", "pending"), "C": StepState("C", "pending")}

    assert decide(steps, Event("step_completed", "A")).is_noop
    assert decide(steps, Event("job_started")).is_noop


def test_stale_failure_of_an_earlier_attempt_changes_nothing() -> None:
    # C was retried (attempt 1 pending); the failure event of attempt 0 arrives late.
    steps = {**done("A"), **running("B"), "C": StepState("C", "pending", retry_count=1)}

    assert decide(steps, Event("step_failed", "C", attempt=0)).is_noop
    assert decide(steps, Event("step_dead_lettered", "C", attempt=0)).is_noop


def test_dead_lettered_optional_branch_is_failed_for_good_and_the_join_runs() -> None:
    steps = {**done("A", "B"), "C": StepState("C", "processing", retry_count=1)}
    decision = decide(steps, Event("step_dead_lettered", "C", attempt=1))

    assert decision.dead_lettered_step == "C"
    assert dispatched(decision) == [("D", 0)]


def test_a_step_fans_out_into_parts_and_joins() -> None:
    start = decide({}, Event("job_started"), workflow="fanned", status="queued", audio_duration_seconds=150)
    assert dispatched(start) == [("X.1", 0), ("X.2", 0), ("X.3", 0)]
    assert {dispatch.parts for dispatch in start.dispatches} == {3}
    assert start.job_status == "processing"

    parts = done("X.1", "X.3")
    assert decide({**parts, **running("X.2")}, Event("step_completed", "X.3"), workflow="fanned").is_noop
    retry = decide({**parts, **failed("X.2")}, Event("step_failed", "X.2"), workflow="fanned")
    assert dispatched(retry) == [("X.2", 1)]

    join = decide(done("X.1", "X.2", "X.3"), Event("step_completed", "X.2"), workflow="fanned")
    assert dispatched(join) == [("X", 0)]
    assert join.dispatches[0].parts == 3
    after = decide(done("X.1", "X.2", "X.3", "X"), Event("step_completed", "X"), workflow="fanned")
    assert dispatched(after) == [("Y", 0)]


def test_parts_already_dispatched_decide_the_count() -> None:
    # The duration became known more precisely after the fan-out: the parts in flight still decide.
    steps = done("X.1", "X.2")
    decision = decide(steps, Event("step_completed", "X.2"), workflow="fanned", audio_duration_seconds=600)
    assert dispatched(decision) == [("X", 0)]


def test_a_short_input_is_not_fanned_out() -> None:
    decision = decide({}, Event("job_started"), workflow="fanned", status="queued", audio_duration_seconds=30)
    assert dispatched(decision) == [("X", 0)]


def test_a_step_an_option_leaves_out_counts_as_settled() -> None:
    assert dispatched(decide(done("A"), Event("step_completed", "A"), workflow="gated")) == [("B", 0)]
    gated = decide(done("A"), Event("step_completed", "A"), workflow="gated", options={"extra": True})
    assert dispatched(gated) == [("G", 0)]


def test_an_event_dead_lettered_at_the_router_fails_the_job() -> None:
    decision = decide(running("B", "C"), Event("event_dead_lettered", reason="poison"))
    assert decision.job_status == "failed"
    assert "poison" in (decision.error_message or "")
    assert decide(done("A", "B", "C", "D"), Event("event_dead_lettered"), status="completed").is_noop


def test_part_names_round_trip() -> None:
    assert split_part(part_name("TRANSCRIBE", 12)) == ("TRANSCRIBE", 12)
    assert split_part("TRANSCRIBE") == ("TRANSCRIBE", None)


def test_the_five_workflows_keep_the_seed_order() -> None:
    # Without options they are the seed's chains: the steps an option adds (FETCH, DIARIZE) are left out.
    plain = JobState(workflow_type="full_pipeline", status="queued", detected_language="fra")
    order = []
    steps: dict[str, StepState] = {}
    decision = next_decision(job=plain, steps=steps, event=Event("job_started"), max_retries=3, backoff_seconds=1)
    while decision.dispatches:
        assert len(decision.dispatches) == 1
        name = decision.dispatches[0].step_type
        order.append(name)
        steps[name] = StepState(name, "completed")
        event = Event("step_completed", name)
        decision = next_decision(job=plain, steps=steps, event=event, max_retries=3, backoff_seconds=1)
    assert order == ["LID", "TRANSCRIBE", "TRANSLATE", "SUMMARIZE"]
    assert decision.job_status == "completed"


def test_a_workflow_must_list_a_step_after_what_it_waits_for() -> None:
    try:
        Workflow((Node("B", after=("A",)), Node("A")))
    except ValueError as error:
        assert "B comes after ['A']" in str(error)
    else:
        raise AssertionError("a step before its dependency was accepted")


def real(steps: dict[str, StepState], event: Event, *, workflow: str = "full_pipeline", **job: object) -> Decision:
    status = str(job.pop("status", "processing"))
    state = JobState(workflow_type=workflow, status=status, detected_language="fra", chunk_seconds=300.0, **job)  # type: ignore[arg-type]
    return next_decision(job=state, steps=steps, event=event, max_retries=3, backoff_seconds=2.0)


def test_speakers_asked_for_run_diarization_beside_transcription() -> None:
    options = {"speaker_labels": True}
    after_lid = real(done("LID"), Event("step_completed", "LID"), options=options)
    assert dispatched(after_lid) == [("TRANSCRIBE", 0), ("DIARIZE", 0)]

    # The translation waits for the speakers, so that it keeps them.
    assert real({**done("LID", "TRANSCRIBE"), **running("DIARIZE")}, Event("step_completed"), options=options).is_noop
    both = real(done("LID", "TRANSCRIBE", "DIARIZE"), Event("step_completed", "DIARIZE"), options=options)
    assert dispatched(both) == [("TRANSLATE", 0)]

    only = real({}, Event("job_started"), workflow="transcribe_only", status="queued", options={"speakers_expected": 2})
    assert dispatched(only) == [("TRANSCRIBE", 0), ("DIARIZE", 0)]


def test_diarization_failing_for_good_leaves_the_transcript_and_a_partial_job() -> None:
    options = {"speaker_labels": True}
    steps = {**done("LID", "TRANSCRIBE"), **failed("DIARIZE", 3)}
    decision = real(steps, Event("step_failed", "DIARIZE", attempt=3), options=options)
    assert dispatched(decision) == [("TRANSLATE", 0)]
    end = real({**steps, **done("TRANSLATE", "SUMMARIZE")}, Event("step_completed", "SUMMARIZE"), options=options)
    assert end.job_status == "partial_complete"
    assert end.failed_steps == ("DIARIZE",)


def test_split_channels_transcribe_each_channel_and_need_no_diarization() -> None:
    options = {"channels": "split", "channel_count": 2, "speaker_labels": True}
    decision = real({}, Event("job_started"), workflow="transcribe_only", status="queued", options=options)
    assert dispatched(decision) == [("TRANSCRIBE.1", 0), ("TRANSCRIBE.2", 0)]
    join = real(
        done("TRANSCRIBE.1", "TRANSCRIBE.2"), Event("step_completed"), workflow="transcribe_only", options=options
    )
    assert dispatched(join) == [("TRANSCRIBE", 0)]


def test_a_long_recording_is_transcribed_in_chunks() -> None:
    decision = real(done("LID"), Event("step_completed", "LID"), audio_duration_seconds=3600.0)
    assert [name for name, _ in dispatched(decision)] == [f"TRANSCRIBE.{n}" for n in range(1, 13)]
    short = real(done("LID"), Event("step_completed", "LID"), audio_duration_seconds=590.0)
    assert dispatched(short) == [("TRANSCRIBE", 0)]


def test_chunk_count_follows_the_target_length() -> None:
    assert chunk_count(None, 300) == 1
    assert chunk_count(600, 300) == 1
    assert chunk_count(601, 300) == 2
    assert chunk_count(3600, 300) == 12
    assert chunk_count(10**6, 300) == MAX_PARTS
    assert chunk_count(3600, None) == 1
