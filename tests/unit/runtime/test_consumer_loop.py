"""The one consumer loop (shared/runtime/loop.py) and the step consumer (shared/worker/step_handler.py) over the
in-memory bus of tests/support: settlement, redelivery, dead-lettering, lock renewal, shutdown,
backoff, settlement in the effect's transaction, and a step whose lease is taken over."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.core.config import Settings
from shared.domain.messages import StepMessage, result_blob_path
from shared.domain.models import Base, Job, ProcessingStep, utcnow
from shared.runtime import Runtime
from shared.runtime.loop import Consumer, Delivery, Settlement, Shutdown, serve
from shared.steps.runner import StepContext, run_step
from shared.worker.step_handler import step_consumer
from tests.support.memory_bus import InMemoryBus, Stored, runtime_with_bus

QUEUE = "work"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(lock_duration_seconds=0.3, shutdown_grace_seconds=0.3)


@pytest.fixture
def bus(settings: Settings) -> InMemoryBus:
    return InMemoryBus(lock_duration=settings.lock_duration_seconds, max_delivery_count=3)


@pytest.fixture
def runtime(settings: Settings, bus: InMemoryBus) -> Iterator[Runtime]:
    built = runtime_with_bus(Runtime(settings), bus)
    yield built
    built.close()


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def moves(stored: Stored) -> list[str]:
    """What happened to a message, lock renewals left out."""
    return [move for move in stored.history if move != "renewed"]


def send(bus: InMemoryBus, body: str, *, queue: str = QUEUE) -> str:
    message_id = str(uuid.uuid4())
    bus.send(queue, message_id=message_id, body=body)
    return message_id


# --- settling


def test_a_message_is_completed_after_its_handler_succeeds(runtime: Runtime, bus: InMemoryBus) -> None:
    message_id = send(bus, "hello")
    seen: list[str] = []

    def handler(delivery: Delivery) -> Settlement:
        seen.append(delivery.body)
        return "complete"

    consumer = Consumer(runtime, QUEUE, handler)
    assert consumer.poll_once(max_wait=0.0)
    assert seen == ["hello"]
    assert bus.find(message_id).state == "done"
    assert moves(bus.find(message_id)) == ["received", "completed"]
    assert not consumer.poll_once(max_wait=0.0), "nothing left to receive"


def test_a_handler_exception_abandons_the_message_and_it_is_delivered_again(runtime: Runtime, bus: InMemoryBus) -> None:
    message_id = send(bus, "flaky")
    deliveries: list[int] = []

    def handler(delivery: Delivery) -> Settlement:
        deliveries.append(delivery.message.delivery_count)
        if len(deliveries) == 1:
            raise ConnectionError("the model server went away")
        return "complete"

    consumer = Consumer(runtime, QUEUE, handler)
    assert consumer.poll_once(max_wait=0.0)
    assert bus.find(message_id).state == "active", "abandoned, not lost"
    assert consumer.poll_once(max_wait=0.0), "delivered again at once, not after the lock lapses"
    assert deliveries == [1, 2]
    assert moves(bus.find(message_id)) == ["received", "abandoned", "received", "completed"]


def test_a_message_failing_every_delivery_is_dead_lettered_at_the_max_delivery_count(
    runtime: Runtime, bus: InMemoryBus
) -> None:
    message_id = send(bus, "always fails")

    def handler(_delivery: Delivery) -> Settlement:
        raise RuntimeError("broken")

    consumer = Consumer(runtime, QUEUE, handler)
    while consumer.poll_once(max_wait=0.0):
        pass
    stored = bus.find(message_id)
    assert stored.state == "dead" and stored.delivery_count == bus.max_delivery_count


def test_a_malformed_message_is_dead_lettered_at_once(runtime: Runtime, bus: InMemoryBus) -> None:
    message_id = send(bus, "{not json")

    def handler(_delivery: Delivery) -> Settlement:
        raise ValueError("malformed: expected a JSON object")

    consumer = Consumer(runtime, QUEUE, handler)
    assert consumer.poll_once(max_wait=0.0)
    stored = bus.find(message_id)
    assert stored.state == "dead" and stored.delivery_count == 1
    assert stored.dead_letter_reason == "InvalidMessage"
    assert stored.dead_letter_description == "malformed: expected a JSON object"


def test_a_batch_is_settled_message_by_message(runtime: Runtime, bus: InMemoryBus) -> None:
    good, bad, failing = send(bus, "good"), send(bus, "bad"), send(bus, "failing")

    def batch_handler(
        runtime: Runtime, bodies: list[str], *, settle_in: Callable[[Session, list[int]], object]
    ) -> list[object]:
        del runtime, settle_in
        results = {"good": "ok", "bad": ValueError("malformed"), "failing": ConnectionError("later")}
        return [results[body] for body in bodies]

    consumer = Consumer(runtime, QUEUE, batch_handler=batch_handler, batch_size=10)
    assert consumer.poll_once(max_wait=0.0)
    assert bus.find(good).state == "done"
    assert bus.find(bad).state == "dead" and bus.find(bad).dead_letter_reason == "InvalidMessage"
    assert bus.find(failing).state == "active" and moves(bus.find(failing)) == ["received", "abandoned"]


# --- lock renewal


def test_the_lock_is_renewed_while_a_slow_handler_works(runtime: Runtime, bus: InMemoryBus, settings: Settings) -> None:
    message_id = send(bus, "slow")
    stolen: list[object] = []

    def handler(_delivery: Delivery) -> Settlement:
        # Three lock durations: without renewal another receiver would take the message meanwhile.
        deadline = time.monotonic() + 3 * settings.lock_duration_seconds
        while time.monotonic() < deadline:
            stolen.extend(bus.receive_many(QUEUE, max_messages=1, max_wait=0.0))
            time.sleep(0.02)
        return "complete"

    consumer = Consumer(runtime, QUEUE, handler)
    assert consumer.poll_once(max_wait=0.0)
    stored = bus.find(message_id)
    assert stolen == [], "no other receiver got the message while it was worked on"
    assert stored.history.count("renewed") >= 3
    assert stored.history[-1] == "completed", "the lock was still ours when the work ended"


# --- settling in the effect's transaction


def test_a_handler_settles_its_message_in_the_transaction_that_records_its_effect(
    runtime: Runtime, bus: InMemoryBus
) -> None:
    message_id = send(bus, "effect")

    def handler(delivery: Delivery) -> Settlement:
        with Session() as session, session.begin():
            delivery.settle_in(session)
            assert bus.find(message_id).state == "active", "settled on commit, not before"
        return "complete"

    assert Consumer(runtime, QUEUE, handler).poll_once(max_wait=0.0)
    assert moves(bus.find(message_id)) == ["received", "completed_in_transaction"], "settled once, in the commit"


def test_a_rolled_back_effect_leaves_its_message_to_be_delivered_again(runtime: Runtime, bus: InMemoryBus) -> None:
    message_id = send(bus, "effect")
    attempts: list[int] = []

    def handler(delivery: Delivery) -> Settlement:
        attempts.append(delivery.message.delivery_count)
        with Session() as session, session.begin():
            delivery.settle_in(session)
            if len(attempts) == 1:
                raise ConnectionError("the database went away before the commit")
        return "complete"

    consumer = Consumer(runtime, QUEUE, handler)
    assert consumer.poll_once(max_wait=0.0)
    assert bus.find(message_id).state == "active"
    assert consumer.poll_once(max_wait=0.0)
    assert attempts == [1, 2]
    assert bus.find(message_id).history[-1] == "completed_in_transaction"


def test_where_the_bus_cannot_settle_in_a_transaction_the_message_is_completed_after_it(
    settings: Settings,
) -> None:
    bus = InMemoryBus(lock_duration=settings.lock_duration_seconds, transactional=False)
    runtime = runtime_with_bus(Runtime(settings), bus)
    message_id = send(bus, "effect")

    def handler(delivery: Delivery) -> Settlement:
        with Session() as session, session.begin():
            delivery.settle_in(session)
        assert not delivery.settled
        return "complete"

    assert Consumer(runtime, QUEUE, handler).poll_once(max_wait=0.0)
    assert moves(bus.find(message_id)) == ["received", "completed"]
    runtime.close()


# --- stopping


def test_sigterm_finishes_the_current_message_and_takes_no_more(
    runtime: Runtime, bus: InMemoryBus, restore_signals: None
) -> None:
    first, second = send(bus, "first"), send(bus, "second")
    working = threading.Event()
    handled: list[str] = []

    def handler(delivery: Delivery) -> Settlement:
        working.set()
        time.sleep(0.1)  # shorter than the grace period: finished, not handed back
        handled.append(delivery.body)
        assert not delivery.shutting_down
        return "complete"

    def terminate_while_working() -> None:
        assert working.wait(5)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_while_working)
    killer.start()
    consumer = Consumer(runtime, QUEUE, handler, receive_wait=0.05)
    assert serve([consumer], shutdown=consumer.shutdown) == 0  # returns only once its threads are done
    killer.join(5)
    assert handled == ["first"]
    assert bus.find(first).state == "done"
    assert moves(bus.find(second)) == [], "never received"


def test_past_the_grace_period_the_handler_is_told_to_hand_its_message_back(runtime: Runtime, bus: InMemoryBus) -> None:
    message_id = send(bus, "long")
    told: list[bool] = []

    def handler(delivery: Delivery) -> Settlement:
        while not delivery.shutting_down:  # a long step checks between segments
            time.sleep(0.01)
        told.append(True)
        return "abandon"

    consumer = Consumer(runtime, QUEUE, handler)
    worker = threading.Thread(target=consumer.poll_once, kwargs={"max_wait": 0.0})
    worker.start()
    time.sleep(0.05)
    consumer.request_stop()
    assert consumer.stopping.is_set() and not consumer.grace_over.is_set()
    worker.join(5)
    assert told == [True] and consumer.grace_over.is_set()
    assert moves(bus.find(message_id)) == ["received", "abandoned"], "handed back for another consumer"
    assert not consumer.poll_once(max_wait=0.0), "a stopping consumer takes no more"


def test_the_loop_backs_off_while_the_database_is_unreachable() -> None:
    calls: list[float] = []

    class Unreachable:
        name = "unreachable"
        concurrency = 1
        idle_seconds = 0.0

        def poll_once(self) -> bool:
            calls.append(time.monotonic())
            raise ConnectionError("connection refused")

    shutdown = Shutdown(grace_seconds=0.1)
    stopper = threading.Timer(1.2, shutdown.request)
    stopper.start()
    thread = threading.Thread(target=serve, args=([Unreachable()],), kwargs={"shutdown": shutdown})
    thread.start()
    thread.join(5)
    # 0.5 s, then 1 s between tries: two tries in 1.2 s, where a loop without backoff makes thousands.
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.45


# --- the step consumer


@pytest.fixture
def step_runtime(runtime: Runtime) -> Runtime:
    """The runtime with a job database (SQLite) and a blob folder, for steps to run against."""
    Base.metadata.create_all(runtime.engine)
    runtime.blobs.ensure_containers()
    return runtime


def new_step(runtime: Runtime, step_type: str = "LID") -> StepMessage:
    job_id, step_id = uuid.uuid4(), uuid.uuid4()
    with runtime.sessions() as session, session.begin():
        session.add(Job(id=job_id, audio_filename="clip.wav", workflow_type="lid_only", status="processing"))
        session.add(ProcessingStep(id=step_id, job_id=job_id, step_type=step_type, status="pending"))
    return StepMessage(job_id=job_id, step_id=step_id, step_type=step_type, attempt=0)


def step_row(runtime: Runtime, step_id: uuid.UUID) -> ProcessingStep:
    with runtime.sessions() as session:
        return session.get_one(ProcessingStep, step_id)


def test_a_step_message_is_run_and_settled_in_the_transaction_that_completes_the_step(
    step_runtime: Runtime, bus: InMemoryBus
) -> None:
    message = new_step(step_runtime)
    bus.send(step_runtime.settings.lid_queue, message_id=message.message_id, body=message.model_dump_json())

    def identify(_step: StepContext) -> dict[str, Any]:
        return {"language": "fra", "confidence": 0.9}

    consumer = step_consumer(
        step_runtime, step_runtime.settings.lid_queue, {"LID": identify}.get, worker_id="unit", receive_wait=0.0
    )
    assert consumer.poll_once()
    assert step_row(step_runtime, message.step_id).status == "completed"
    assert moves(bus.find(message.message_id)) == ["received", "completed_in_transaction"]
    (event,) = bus.in_queue(step_runtime.settings.job_events_queue)
    assert '"step_completed"' in event.body


def test_a_step_type_the_consumer_does_not_run_is_dead_lettered(step_runtime: Runtime, bus: InMemoryBus) -> None:
    message = new_step(step_runtime, "TRANSCRIBE")
    bus.send(QUEUE, message_id=message.message_id, body=message.model_dump_json())
    consumer = step_consumer(step_runtime, QUEUE, {"LID": lambda _step: {}}.get, worker_id="unit", receive_wait=0.0)
    assert consumer.poll_once()
    assert bus.find(message.message_id).dead_letter_reason == "UnexpectedStepType"
    assert step_row(step_runtime, message.step_id).status == "pending", "not claimed"


def test_a_step_another_live_worker_holds_is_left_to_redelivery_without_waiting(
    step_runtime: Runtime, bus: InMemoryBus
) -> None:
    message = new_step(step_runtime)
    with step_runtime.sessions() as session, session.begin():
        session.execute(
            update(ProcessingStep)
            .where(ProcessingStep.id == message.step_id)
            .values(status="processing", attempt=1, worker_id="other", lease_expires_at=utcnow() + timedelta(hours=1))
        )
    bus.send(QUEUE, message_id=message.message_id, body=message.model_dump_json())
    consumer = step_consumer(step_runtime, QUEUE, {"LID": lambda _step: {}}.get, worker_id="unit", receive_wait=0.0)
    started = time.monotonic()
    assert consumer.poll_once()
    assert time.monotonic() - started < step_runtime.settings.lock_duration_seconds, "no sleep for a lock period"
    stored = bus.find(message.message_id)
    assert moves(stored) == ["received"], "neither completed nor abandoned: its lock lapses, then it comes back"
    time.sleep(step_runtime.settings.lock_duration_seconds + 0.05)
    assert bus.receive(QUEUE, max_wait=0.0) is not None


def test_a_worker_whose_lease_is_taken_over_stops_and_records_nothing(step_runtime: Runtime, bus: InMemoryBus) -> None:
    message = new_step(step_runtime)
    stopped = threading.Event()
    wrote: list[BaseException] = []

    def take_over() -> None:
        # Another worker claims the step (as it would once our lease had lapsed): a newer attempt.
        with step_runtime.sessions() as session, session.begin():
            session.execute(
                update(ProcessingStep)
                .where(ProcessingStep.id == message.step_id)
                .values(attempt=ProcessingStep.attempt + 1, worker_id="thief")
            )

    def long_work(step: StepContext) -> dict[str, Any]:
        take_over()
        deadline = time.monotonic() + 5
        while not step.should_stop():  # between segments
            assert time.monotonic() < deadline, "never told to stop"
            time.sleep(0.01)
        stopped.set()
        try:
            step.put_result_file("srt", "1\n", content_type="application/x-subrip")
        except Exception as refused:
            wrote.append(refused)
        return {"language": "fra", "confidence": 0.9}

    outcome = run_step(step_runtime, message, long_work, worker_id="unit")
    assert outcome == "lost"
    assert stopped.is_set()
    assert [type(error).__name__ for error in wrote] == ["LeaseLost"], "its result files are refused"
    blobs, container = step_runtime.blobs, step_runtime.settings.results_container
    assert not blobs.exists(container, result_blob_path(message.job_id, "LID"))
    assert not blobs.exists(container, result_blob_path(message.job_id, "LID", "srt"))
    row = step_row(step_runtime, message.step_id)
    assert (row.status, row.worker_id, row.error_message) == ("processing", "thief", None), "the new holder's"
    assert bus.in_queue(step_runtime.settings.job_events_queue) == [], "no job event"
