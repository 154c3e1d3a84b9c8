"""The router's batch path: one transaction for many events, each event's fate reported apart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from shared.domain.messages import JobEvent
from shared.domain.models import ProcessingStep, QueueMessage
from shared.worker.router import route_events
from tests.support.pipeline import Stack, build_stack


@pytest.fixture
def stack(database_url: str, make_settings) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url))
    yield built
    built.client.close()
    built.runtime.close()


def test_batch_reports_each_event_and_routes_the_good_ones(stack: Stack) -> None:
    jobs = [stack.submit("full_pipeline") for _ in range(3)]
    for job_id in jobs:
        stack.start(job_id)
    started = [JobEvent(job_id=job_id, kind="job_started").model_dump_json() for job_id in jobs]
    unknown = JobEvent(job_id=uuid.uuid4(), kind="job_started").model_dump_json()
    # the same job's event twice in one batch: routed in order against the updated state, dispatched once
    results = route_events(stack.runtime, ["{not json", started[0], unknown, started[1], started[2], started[0]])

    assert isinstance(results[0], ValueError)
    assert results[2] is None
    assert [results[i].dispatch.step_type for i in (1, 3, 4)] == ["LID"] * 3  # type: ignore[union-attr]
    assert results[5].is_noop  # type: ignore[union-attr]
    with stack.runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ProcessingStep)) == 3
        lid_messages = session.scalar(
            select(func.count()).select_from(QueueMessage).where(QueueMessage.queue == "lid-jobs")
        )
        assert lid_messages == 3
    assert {stack.job(job_id)["status"] for job_id in jobs} == {"processing"}


def test_pump_dead_letters_malformed_events_in_a_batch(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    stack.runtime.bus.send("job-events", message_id="junk", body="{not json")
    stack.start(job_id)
    assert stack.router.poll_once(max_wait=0.0)
    dead = stack.runtime.bus.receive_many("job-events", max_messages=5, max_wait=0.0, dead_letter=True)
    assert [m.message_id for m in dead] == ["junk"]
    assert dead[0].dead_letter_reason == "InvalidMessage"
    assert stack.job(job_id)["steps"][0]["step_type"] == "LID"
