"""Dead letters are accounted for: the step fails with the reason, the workflow decides, the client hears."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.domain.messages import JobEvent
from shared.domain.registry import queue_for
from shared.domain.workflow import JobState
from shared.worker.deadletters import drain_dead_letters, handle_dead_letter
from tests.support.pipeline import Stack, build_stack


@pytest.fixture
def stack(database_url: str, make_settings) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url, max_delivery_count=2))
    yield built
    built.client.close()
    built.runtime.close()


def steps_of(stack: Stack, job_id) -> dict[str, dict]:
    return {step["step_type"]: step for step in stack.job(job_id)["steps"]}


def poison(stack: Stack, queue: str) -> None:
    """A worker that dies on the message every time: it is delivered max_delivery_count times, then
    dead-lettered by the queue."""
    bus = stack.runtime.bus
    for _ in range(stack.settings.max_delivery_count):
        message = bus.receive(queue, max_wait=0.0)
        assert message is not None
        bus.abandon(message)
    assert bus.receive(queue, max_wait=0.0) is None


def test_a_poison_step_message_fails_the_job_with_the_reason(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    stack.start(job_id)
    stack.router.poll_once(max_wait=0.0)
    poison(stack, "lid-jobs")
    assert stack.runtime.bus.queue_depths()["lid-jobs"].dead_letter == 1

    assert drain_dead_letters(stack.runtime) == 1
    step = steps_of(stack, job_id)["LID"]
    assert step["status"] == "failed"
    assert "MaxDeliveryCountExceeded" in step["error_message"]
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "failed"
    assert step["retry_count"] == 0, "a dead-lettered step is not retried"
    assert stack.runtime.bus.queue_depths()["lid-jobs"].dead_letter == 0


def test_a_dead_lettered_translation_leaves_the_job_partial_complete(stack: Stack) -> None:
    job_id = stack.submit("full_pipeline")
    stack.start(job_id)
    while True:
        stack.router.poll_once(max_wait=0.0)
        if "TRANSLATE" in steps_of(stack, job_id):
            break  # dispatched: poison its message before any worker takes it
        for worker in stack.workers[:2]:
            worker.poll_once()
    # Offline, translation from the audio is routed to the Whisper workers' queue (shared/steps/translate.py).
    queue = queue_for(stack.settings, "TRANSLATE", JobState(workflow_type="full_pipeline", status="processing"))
    assert queue == stack.settings.whisper_queue
    poison(stack, queue)
    drain_dead_letters(stack.runtime)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "partial_complete"
    steps = steps_of(stack, job_id)
    assert steps["TRANSLATE"]["status"] == "failed"
    assert steps["SUMMARIZE"]["status"] == "completed"


def test_a_dead_letter_for_a_step_completed_meanwhile_changes_nothing(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    stack.start(job_id)
    stack.router.poll_once(max_wait=0.0)
    message = stack.runtime.bus.receive("lid-jobs", max_wait=0.0)
    assert message is not None
    stack.runtime.bus.abandon(message)
    stack.drive(job_id)
    outcome = handle_dead_letter(
        stack.runtime, queue="lid-jobs", body=message.body, reason="MaxDeliveryCountExceeded", description=""
    )
    assert outcome == "step_obsolete"
    assert stack.job(job_id)["status"] == "completed"


def test_a_job_event_the_router_cannot_handle_fails_the_job(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    stack.start(job_id)
    event = JobEvent(job_id=job_id, kind="job_started")
    outcome = handle_dead_letter(
        stack.runtime,
        queue="job-events",
        body=event.model_dump_json(),
        reason="MaxDeliveryCountExceeded",
        description="x",
    )
    assert outcome == "job_failed"
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert "MaxDeliveryCountExceeded" in job["error_message"]


def test_unreadable_dead_letters_are_removed_and_logged(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    stack.runtime.bus.send("whisper-jobs", message_id="junk", body="{not json")
    message = stack.runtime.bus.receive("whisper-jobs", max_wait=0.0)
    assert message is not None
    stack.runtime.bus.dead_letter(message, reason="InvalidMessage", description="bad json")
    assert drain_dead_letters(stack.runtime) == 1
    assert any(getattr(r, "action", None) == "dead_letter_unreadable" for r in caplog.records)
    assert stack.runtime.bus.queue_depths()["whisper-jobs"].dead_letter == 0
