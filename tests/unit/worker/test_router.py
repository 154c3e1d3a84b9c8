"""The router over an in-memory bus (tests/support/memory_bus.py) and a throwaway SQLite store: events in,
decisions applied, step messages out — in one transaction that also settles the events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.orm import Session

from shared.core.config import Settings
from shared.domain.messages import JobEvent, StepMessage
from shared.domain.models import Base, ProcessingStep, WebhookDelivery
from shared.jobs.store import create_job, get_job
from shared.runtime import Runtime
from shared.worker.router import route_events
from tests.support.memory_bus import InMemoryBus, runtime_with_bus


@pytest.fixture
def runtime(make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    settings = make_settings(CALLBACK_ALLOWED_HOSTS="hooks.test")
    built = runtime_with_bus(Runtime(settings), InMemoryBus(lock_duration=5.0, max_delivery_count=3))
    Base.metadata.create_all(built.engine)
    yield built
    built.close()


def bus_of(runtime: Runtime) -> InMemoryBus:
    bus = runtime.bus
    assert isinstance(bus, InMemoryBus)
    return bus


def new_job(runtime: Runtime, workflow: str = "full_pipeline", **fields: object) -> uuid.UUID:
    with runtime.sessions() as session, session.begin():
        job = create_job(
            session=session,
            audio_filename="a.wav",
            workflow_type=workflow,
            source_language=fields.pop("source_language", None),  # type: ignore[arg-type]
            target_language="en",
            callback_url=fields.pop("callback_url", None),  # type: ignore[arg-type]
            source_job_id=None,
            audio_blob_path="x/a.wav",
            options=fields.pop("options", None),  # type: ignore[arg-type]
        )
        job.status = "queued"
        return job.id


def event(job_id: uuid.UUID, kind: str, step_type: str | None = None, attempt: int = 0) -> str:
    return JobEvent(job_id=job_id, kind=kind, step_type=step_type, attempt=attempt).model_dump_json()  # type: ignore[arg-type]


def sent(runtime: Runtime, queue: str) -> list[StepMessage]:
    return [StepMessage.model_validate_json(stored.body) for stored in bus_of(runtime).in_queue(queue)]


def complete_step(runtime: Runtime, job_id: uuid.UUID, step_type: str) -> None:
    with runtime.sessions() as session, session.begin():
        job = get_job(session=session, job_id=job_id)
        assert job is not None
        step = next(step for step in job.steps if step.step_type == step_type)
        step.status = "completed"
        if step_type == "LID":
            job.detected_language = "fra"


def test_a_started_job_dispatches_its_first_step_and_settles_the_event(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    settled: list[list[int]] = []

    def settle_in(_session: Session, indexes: list[int]) -> None:
        settled.append(indexes)

    (decision,) = route_events(runtime, [event(job_id, "job_started")], settle_in=settle_in)

    assert not isinstance(decision, Exception) and decision is not None
    assert [message.step_type for message in sent(runtime, runtime.settings.lid_queue)] == ["LID"]
    assert settled == [[0]]
    with runtime.sessions() as session:
        job = get_job(session=session, job_id=job_id)
        assert job is not None and job.status == "processing"
        assert [(step.step_type, step.status) for step in job.steps] == [("LID", "pending")]


def test_a_redelivered_event_sends_nothing_twice(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    route_events(runtime, [event(job_id, "job_started")])
    route_events(runtime, [event(job_id, "job_started"), event(job_id, "job_started")])

    assert len(sent(runtime, runtime.settings.lid_queue)) == 1


def test_a_malformed_event_is_refused_alone_and_the_rest_of_the_batch_is_routed(runtime: Runtime) -> None:
    first, second = new_job(runtime), new_job(runtime)
    results = route_events(runtime, [event(first, "job_started"), "{not json", event(second, "job_started")])

    assert isinstance(results[1], ValueError)
    assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception)
    assert {message.job_id for message in sent(runtime, runtime.settings.lid_queue)} == {first, second}


def test_an_event_of_an_unknown_job_is_dropped(runtime: Runtime) -> None:
    assert route_events(runtime, [event(uuid.uuid4(), "job_started")]) == [None]


def test_the_job_walks_its_chain_and_ends_with_its_webhook_staged(runtime: Runtime) -> None:
    job_id = new_job(runtime, callback_url="https://hooks.test/done")
    route_events(runtime, [event(job_id, "job_started")])
    for step_type, next_step, queue in (
        ("LID", "TRANSCRIBE", runtime.settings.whisper_queue),
        # Offline, a transcript made from audio is translated from the audio, where the Whisper model is.
        ("TRANSCRIBE", "TRANSLATE", runtime.settings.whisper_queue),
        ("TRANSLATE", "SUMMARIZE", runtime.settings.azure_ai_queue),
        ("SUMMARIZE", None, None),
    ):
        complete_step(runtime, job_id, step_type)
        route_events(runtime, [event(job_id, "step_completed", step_type)])
        if queue is not None:
            assert next_step in [message.step_type for message in sent(runtime, queue)]

    with runtime.sessions() as session:
        job = get_job(session=session, job_id=job_id)
        assert job is not None and job.status == "completed"
        deliveries = session.query(WebhookDelivery).filter_by(job_id=job_id).all()
        assert [json.dumps(d.payload["status"]) for d in deliveries] == ['"completed"']


def test_a_failed_step_is_retried_with_a_delay_on_its_own_queue(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    route_events(runtime, [event(job_id, "job_started")])
    with runtime.sessions() as session, session.begin():
        step = session.query(ProcessingStep).filter_by(job_id=job_id, step_type="LID").one()
        step.status, step.error_message = "failed", "flaky"

    route_events(runtime, [event(job_id, "step_failed", "LID")])

    messages = bus_of(runtime).in_queue(runtime.settings.lid_queue)
    assert [StepMessage.model_validate_json(m.body).attempt for m in messages] == [0, 1]
    assert messages[1].visible_at > messages[1].enqueued_at
