"""The SQL queue keeps the MessageBus contract (Service Bus semantics) on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from shared.bus import QueueDepth, ReceivedMessage
from shared.bus.sqlqueue import MAX_DELIVERY_REASON, SqlQueue
from shared.core.config import Settings
from shared.core.db import make_engine, make_sessionmaker, migrate
from shared.core.errors import MessageLockLost
from shared.domain.models import QueueMessage

Q = "job-events"
OTHER = "lid-jobs"

BusFactory = Callable[..., SqlQueue]


@pytest.fixture
def new_bus(make_settings: Callable[..., Settings], database_url: str) -> Iterator[BusFactory]:
    """Builds SqlQueues over the test database, each with its own engine, closed at the end."""
    opened: list[tuple[SqlQueue, Engine]] = []

    def build(**overrides: Any) -> SqlQueue:
        values: dict[str, Any] = {
            "database_url": database_url,
            "lock_duration_seconds": 30.0,
            "max_delivery_count": 10,
            "duplicate_detection_seconds": 600.0,
        }
        values.update(overrides)
        settings = make_settings(**values)
        engine = make_engine(settings)
        bus = SqlQueue(settings, engine)
        opened.append((bus, engine))
        return bus

    yield build
    for bus, engine in opened:
        bus.close()
        engine.dispose()


@pytest.fixture
def bus(new_bus: BusFactory) -> SqlQueue:
    return new_bus()


def engine_of(bus: SqlQueue) -> Engine:
    return bus._engine


def receive_now(bus: SqlQueue, queue: str = Q, **kwargs: Any) -> ReceivedMessage | None:
    return bus.receive(queue, max_wait=0, **kwargs)


def drain(bus: SqlQueue, queue: str = Q) -> list[str]:
    bodies = []
    while (message := receive_now(bus, queue)) is not None:
        bodies.append(message.body)
        bus.complete(message)
    return bodies


class Receiver(threading.Thread):
    """Receives one message in the background and notes when it came back."""

    def __init__(self, bus: SqlQueue, queue: str = Q, max_wait: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.bus, self.queue, self.max_wait = bus, queue, max_wait
        self.message: ReceivedMessage | None = None
        self.returned_at: float | None = None

    def run(self) -> None:
        self.message = self.bus.receive(self.queue, max_wait=self.max_wait)
        self.returned_at = time.monotonic()


# --- send, receive, settle


def test_send_receive_complete(bus: SqlQueue) -> None:
    before = time.time()
    bus.send(Q, message_id="m-1", body='{"n": 1}', properties={"traceparent": "00-abc-01"})

    message = bus.receive(Q, max_wait=1)

    assert message is not None
    assert (message.queue, message.message_id, message.body) == (Q, "m-1", '{"n": 1}')
    assert message.properties == {"traceparent": "00-abc-01"}
    assert message.delivery_count == 1
    assert message.lock_token
    assert before - 1 <= message.enqueued_at <= time.time() + 1
    assert message.locked_until == pytest.approx(time.time() + 30, abs=2)
    assert receive_now(bus) is None, "a locked message is not delivered twice"
    bus.complete(message)
    assert receive_now(bus) is None
    assert bus.queue_depths()[Q] == QueueDepth(active=0, scheduled=0, dead_letter=0)
    assert bus.flush() == 0


def test_queues_are_separate(bus: SqlQueue) -> None:
    bus.send(Q, message_id="same-id", body="events")
    bus.send(OTHER, message_id="same-id", body="lid")

    assert drain(bus, OTHER) == ["lid"]
    assert drain(bus, Q) == ["events"]


def test_receive_on_empty_queue_waits_max_wait_then_returns_none(bus: SqlQueue) -> None:
    started = time.monotonic()
    assert bus.receive(Q, max_wait=0.4) is None
    waited = time.monotonic() - started
    assert 0.38 <= waited < 1.5


def test_messages_come_out_in_the_order_they_were_sent(bus: SqlQueue) -> None:
    for n in range(20):
        bus.send(Q, message_id=f"m-{n}", body=str(n))

    assert drain(bus) == [str(n) for n in range(20)]


# --- staging in the caller's transaction


def test_staged_message_is_sent_only_when_the_transaction_commits(bus: SqlQueue) -> None:
    sessions = make_sessionmaker(engine_of(bus))
    receiver = Receiver(bus, max_wait=5)
    with sessions() as session, session.begin():
        bus.stage(session, Q, message_id="staged", body="hello")
        receiver.start()
        time.sleep(0.3)
        assert receiver.returned_at is None, "delivered before the commit"
        committed_at = time.monotonic()
    receiver.join(6)

    assert receiver.message is not None
    assert receiver.message.body == "hello"
    assert receiver.returned_at is not None
    assert receiver.returned_at >= committed_at
    assert receiver.returned_at - committed_at < 0.5, "a commit in this process wakes the receiver"


def test_staged_message_is_dropped_on_rollback(bus: SqlQueue) -> None:
    sessions = make_sessionmaker(engine_of(bus))
    with sessions() as session:
        session.begin()
        bus.stage(session, Q, message_id="rolled-back", body="never")
        session.rollback()

    assert bus.receive(Q, max_wait=0.2) is None
    bus.send(Q, message_id="rolled-back", body="second try")
    assert drain(bus) == ["second try"], "the rolled-back id was never recorded"


def test_stage_commits_with_the_callers_own_writes(bus: SqlQueue) -> None:
    sessions = make_sessionmaker(engine_of(bus))
    with sessions() as session, session.begin():
        bus.stage(session, Q, message_id="a", body="1")
        bus.stage(session, OTHER, message_id="b", body="2", delay=0)

    assert drain(bus) == ["1"]
    assert drain(bus, OTHER) == ["2"]


# --- duplicate detection


def test_duplicate_message_id_is_dropped_while_the_message_is_pending(bus: SqlQueue) -> None:
    bus.send(Q, message_id="dup", body="first")
    bus.send(Q, message_id="dup", body="second")
    sessions = make_sessionmaker(engine_of(bus))
    with sessions() as session, session.begin():
        bus.stage(session, Q, message_id="dup", body="third")

    assert drain(bus) == ["first"]


def test_duplicate_dropped_after_completion_within_window_and_accepted_after_it(new_bus: BusFactory) -> None:
    bus = new_bus(duplicate_detection_seconds=0.6)
    bus.send(Q, message_id="dup", body="first")
    assert drain(bus) == ["first"]

    bus.send(Q, message_id="dup", body="within the window")
    assert drain(bus) == []

    time.sleep(0.7)
    bus.send(Q, message_id="dup", body="after the window")
    message = bus.receive(Q, max_wait=1)
    assert message is not None
    assert (message.body, message.delivery_count) == ("after the window", 1)
    bus.complete(message)


def test_dead_lettered_message_id_stays_a_duplicate(new_bus: BusFactory) -> None:
    bus = new_bus(duplicate_detection_seconds=0.1)
    bus.send(Q, message_id="poison", body="first")
    message = receive_now(bus)
    assert message is not None
    bus.dead_letter(message, reason="Bad", description="bad")
    time.sleep(0.2)

    bus.send(Q, message_id="poison", body="again")

    assert receive_now(bus) is None
    assert bus.queue_depths()[Q].dead_letter == 1


def test_old_completed_messages_are_purged(new_bus: BusFactory) -> None:
    bus = new_bus(duplicate_detection_seconds=0.2)
    for n in range(5):
        bus.send(Q, message_id=f"old-{n}", body=str(n))
    assert len(drain(bus)) == 5
    time.sleep(0.3)
    # A fresh queue object purges on its first receive.
    fresh = new_bus(duplicate_detection_seconds=0.2)
    assert receive_now(fresh) is None

    with engine_of(bus).connect() as connection:
        left = connection.execute(select(func.count()).select_from(QueueMessage)).scalar()
    assert left == 0


# --- scheduled delivery


def test_scheduled_message_is_not_delivered_before_its_time(bus: SqlQueue) -> None:
    sent = time.monotonic()
    bus.send(Q, message_id="later", body="later", delay=0.5)
    bus.send(Q, message_id="now", body="now")

    first = receive_now(bus)
    assert first is not None
    assert first.body == "now"
    bus.complete(first)
    assert receive_now(bus) is None
    assert bus.queue_depths()[Q] == QueueDepth(active=0, scheduled=1, dead_letter=0)

    later = bus.receive(Q, max_wait=3)
    arrived = time.monotonic() - sent
    assert later is not None
    assert later.body == "later"
    assert 0.45 <= arrived < 1.5, "delivered at its time, not before and not long after"
    bus.complete(later)


# --- locks


def test_expired_lock_redelivers_with_next_delivery_count(new_bus: BusFactory) -> None:
    bus = new_bus(lock_duration_seconds=0.3)
    bus.send(Q, message_id="m", body="slow")
    first = receive_now(bus)
    assert first is not None
    assert first.delivery_count == 1

    started = time.monotonic()
    second = bus.receive(Q, max_wait=3)
    assert second is not None
    assert time.monotonic() - started < 1.5, "the waiting receiver wakes when the lock expires"
    assert second.message_id == "m"
    assert second.delivery_count == 2
    assert second.lock_token != first.lock_token

    with pytest.raises(MessageLockLost):
        bus.complete(first)
    with pytest.raises(MessageLockLost):
        bus.renew_lock(first)
    with pytest.raises(MessageLockLost):
        bus.abandon(first)
    with pytest.raises(MessageLockLost):
        bus.dead_letter(first, reason="late", description="too late")
    bus.complete(second)
    assert receive_now(bus) is None


def test_complete_after_the_lock_expired_raises_even_if_nobody_took_it(new_bus: BusFactory) -> None:
    bus = new_bus(lock_duration_seconds=0.2)
    bus.send(Q, message_id="m", body="x")
    message = receive_now(bus)
    assert message is not None
    time.sleep(0.3)

    with pytest.raises(MessageLockLost):
        bus.complete(message)
    again = receive_now(bus)
    assert again is not None
    assert again.delivery_count == 2


def test_settled_message_cannot_be_settled_again(bus: SqlQueue) -> None:
    bus.send(Q, message_id="m", body="x")
    message = receive_now(bus)
    assert message is not None
    bus.complete(message)

    with pytest.raises(MessageLockLost):
        bus.complete(message)
    with pytest.raises(MessageLockLost):
        bus.renew_lock(message)


def test_renew_lock_keeps_the_message_locked_past_the_first_expiry(new_bus: BusFactory) -> None:
    bus = new_bus(lock_duration_seconds=0.5)
    bus.send(Q, message_id="m", body="long work")
    message = receive_now(bus)
    assert message is not None
    first_expiry = message.locked_until

    time.sleep(0.3)
    renewed = bus.renew_lock(message)
    assert renewed == message.locked_until
    assert renewed > first_expiry + 0.2
    time.sleep(0.35)  # past the first expiry, within the renewed one

    assert time.time() > first_expiry
    assert receive_now(bus) is None
    bus.complete(message)


def test_abandon_redelivers_at_once(bus: SqlQueue) -> None:
    bus.send(Q, message_id="m", body="x")
    first = receive_now(bus)
    assert first is not None

    bus.abandon(first)

    second = receive_now(bus)
    assert second is not None
    assert (second.message_id, second.delivery_count) == ("m", 2)
    with pytest.raises(MessageLockLost):
        bus.complete(first)
    bus.complete(second)


# --- dead letters


def test_abandoned_max_delivery_count_times_goes_to_the_dead_letter_queue(new_bus: BusFactory) -> None:
    bus = new_bus(max_delivery_count=3)
    bus.send(Q, message_id="poison", body="x")
    for attempt in (1, 2, 3):
        message = receive_now(bus)
        assert message is not None
        assert message.delivery_count == attempt
        bus.abandon(message)

    assert receive_now(bus) is None
    dead = receive_now(bus, dead_letter=True)
    assert dead is not None
    assert dead.message_id == "poison"
    assert dead.dead_letter_reason == MAX_DELIVERY_REASON
    assert dead.dead_letter_description
    assert "3" in dead.dead_letter_description


def test_lock_expiring_max_delivery_count_times_goes_to_the_dead_letter_queue(new_bus: BusFactory) -> None:
    bus = new_bus(max_delivery_count=2, lock_duration_seconds=0.15)
    bus.send(Q, message_id="crashy", body="x")
    bus.send(Q, message_id="fine", body="y")
    for attempt in (1, 2):
        message = bus.receive(Q, max_wait=2)
        assert message is not None
        assert (message.message_id, message.delivery_count) == ("crashy", attempt)
        fine = receive_now(bus)
        assert fine is not None
        assert fine.message_id == "fine"
        bus.abandon(fine) if attempt == 1 else bus.complete(fine)
        time.sleep(0.2)  # the worker "crashed": its lock expires

    assert bus.receive(Q, max_wait=0.3) is None, "the third delivery goes to the dead-letter queue instead"
    depths = bus.queue_depths()[Q]
    assert depths == QueueDepth(active=0, scheduled=0, dead_letter=1)
    dead = receive_now(bus, dead_letter=True)
    assert dead is not None
    assert (dead.message_id, dead.dead_letter_reason) == ("crashy", MAX_DELIVERY_REASON)


def test_dead_letter_with_reason_then_complete_from_the_dead_letter_queue(bus: SqlQueue) -> None:
    bus.send(Q, message_id="bad", body="garbage", properties={"k": "v"})
    message = receive_now(bus)
    assert message is not None

    bus.dead_letter(message, reason="InvalidMessage", description="body is not JSON")

    assert receive_now(bus) is None
    assert receive_now(bus, OTHER, dead_letter=True) is None
    dead = bus.receive(Q, max_wait=1, dead_letter=True)
    assert dead is not None
    assert (dead.message_id, dead.body, dead.properties) == ("bad", "garbage", {"k": "v"})
    assert (dead.dead_letter_reason, dead.dead_letter_description) == ("InvalidMessage", "body is not JSON")
    assert receive_now(bus, dead_letter=True) is None, "peek-locked in the dead-letter queue too"
    bus.complete(dead)
    assert receive_now(bus, dead_letter=True) is None
    assert bus.queue_depths()[Q].dead_letter == 0


def test_abandoned_dead_letter_is_received_again_from_the_dead_letter_queue(new_bus: BusFactory) -> None:
    bus = new_bus(max_delivery_count=1)
    bus.send(Q, message_id="m", body="x")
    message = receive_now(bus)
    assert message is not None
    bus.dead_letter(message, reason="r", description="d")
    for _ in range(3):  # no max delivery count inside the dead-letter queue
        dead = receive_now(bus, dead_letter=True)
        assert dead is not None
        bus.abandon(dead)
    assert receive_now(bus, dead_letter=True) is not None


def test_dead_letter_receiver_wakes_when_a_message_is_dead_lettered(bus: SqlQueue) -> None:
    bus.send(Q, message_id="m", body="x")
    message = receive_now(bus)
    assert message is not None
    receiver = threading.Thread(target=lambda: results.append(bus.receive(Q, max_wait=5, dead_letter=True)))
    results: list[ReceivedMessage | None] = []
    receiver.start()
    time.sleep(0.3)
    bus.dead_letter(message, reason="r", description="d")
    dead_lettered_at = time.monotonic()
    receiver.join(6)

    assert time.monotonic() - dead_lettered_at < 0.5
    assert results[0] is not None
    assert results[0].message_id == "m"


# --- depths


def test_queue_depths_count_active_scheduled_and_dead_letters(bus: SqlQueue) -> None:
    for n in range(3):
        bus.send(Q, message_id=f"a-{n}", body="x")
    bus.send(Q, message_id="s-1", body="x", delay=60)
    bus.send("custom-queue", message_id="c-1", body="x")
    locked = receive_now(bus)
    to_dead = receive_now(bus)
    assert locked is not None
    assert to_dead is not None
    bus.dead_letter(to_dead, reason="r", description="d")

    depths = bus.queue_depths()

    assert depths[Q] == QueueDepth(active=2, scheduled=1, dead_letter=1)
    assert depths["custom-queue"] == QueueDepth(active=1, scheduled=0, dead_letter=0)
    for queue in ("lid-jobs", "whisper-jobs", "azure-ai-jobs"):
        assert depths[queue] == QueueDepth(active=0, scheduled=0, dead_letter=0)
    bus.complete(locked)
    assert bus.queue_depths()[Q].active == 1


# --- concurrency and wake-ups


def consume_all(buses: list[SqlQueue], consumers_per_bus: int, expected: int) -> list[str]:
    received: list[str] = []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def consume(bus: SqlQueue) -> None:
        try:
            while True:
                message = bus.receive(Q, max_wait=0.5)
                if message is None:
                    return
                bus.complete(message)
                with guard:
                    received.append(message.message_id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=consume, args=(bus,)) for bus in buses * consumers_per_bus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(received) >= expected or not any(thread.is_alive() for thread in threads)
    return received


def test_concurrent_consumers_receive_every_message_exactly_once(bus: SqlQueue) -> None:
    ids = [f"m-{n}" for n in range(200)]
    for message_id in ids:
        bus.send(Q, message_id=message_id, body="x")

    received = consume_all([bus], consumers_per_bus=4, expected=len(ids))

    assert sorted(received) == sorted(ids)
    assert bus.queue_depths()[Q] == QueueDepth(active=0, scheduled=0, dead_letter=0)


def wake_latencies(bus: SqlQueue, send: Callable[[str], None], rounds: int = 5) -> list[float]:
    """How long a receiver that has waited a while takes to return after `send` returns."""
    latencies = []
    for n in range(rounds):
        receiver = Receiver(bus, max_wait=10)
        receiver.start()
        time.sleep(0.4)  # long enough for a polling receiver to have backed off to its longest sleep
        assert receiver.returned_at is None
        send(f"m-{n}")
        sent_at = time.monotonic()
        receiver.join(11)
        assert receiver.message is not None
        assert receiver.message.message_id == f"m-{n}"
        assert receiver.returned_at is not None
        latencies.append(receiver.returned_at - sent_at)
        bus.complete(receiver.message)
    return sorted(latencies)


def test_waiting_receiver_wakes_at_once_on_a_send_from_this_process(bus: SqlQueue) -> None:
    latencies = wake_latencies(bus, lambda message_id: bus.send(Q, message_id=message_id, body="x"))

    # Polling alone would take half its longest sleep on average; a wake-up takes about nothing.
    assert latencies[len(latencies) // 2] < 0.04, latencies


def test_waiting_receiver_wakes_at_once_when_a_staged_message_commits(bus: SqlQueue) -> None:
    sessions = make_sessionmaker(engine_of(bus))

    def stage(message_id: str) -> None:
        with sessions() as session, session.begin():
            bus.stage(session, Q, message_id=message_id, body="x")

    latencies = wake_latencies(bus, stage)

    assert latencies[len(latencies) // 2] < 0.04, latencies


@pytest.fixture
def pg_url(pg_database_factory: Callable[[], str], tmp_path: Any) -> str:
    url = pg_database_factory()
    migrate(Settings(database_url=url, speechflow_home=tmp_path / "home"))
    return url


@pytest.mark.postgres
def test_postgres_consumers_on_separate_engines_receive_every_message_exactly_once(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    buses = [SqlQueue(s, make_engine(s)) for s in (make_settings(database_url=pg_url) for _ in range(2))]
    try:
        ids = [f"m-{n}" for n in range(200)]
        for n, message_id in enumerate(ids):
            buses[n % 2].send(Q, message_id=message_id, body="x")

        received = consume_all(buses, consumers_per_bus=2, expected=len(ids))

        assert sorted(received) == sorted(ids)
    finally:
        for bus in buses:
            bus.close()
            engine_of(bus).dispose()


@pytest.mark.postgres
def test_postgres_waiting_receiver_wakes_on_a_send_from_another_connection(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    settings = make_settings(database_url=pg_url)
    waiting, sending = SqlQueue(settings, make_engine(settings)), SqlQueue(settings, make_engine(settings))
    try:
        latencies = wake_latencies(
            waiting, lambda message_id: sending.send(Q, message_id=message_id, body="x"), rounds=5
        )
        # Another engine, so only the database can have told the waiting receiver: far below the
        # listener's 5 s safety net and the 100 ms a polling receiver sleeps.
        assert latencies[len(latencies) // 2] < 0.04, latencies
        assert latencies[-1] < 0.1, latencies
    finally:
        for bus in (waiting, sending):
            bus.close()
            engine_of(bus).dispose()


def test_receive_many_locks_a_batch_in_order_and_complete_many_settles_it(bus: SqlQueue) -> None:
    for n in range(5):
        bus.send(Q, message_id=f"batch-{n}", body=str(n))
    first = bus.receive_many(Q, max_messages=3, max_wait=0.0)
    assert [m.body for m in first] == ["0", "1", "2"]
    assert all(m.delivery_count == 1 for m in first)
    rest = bus.receive_many(Q, max_messages=10, max_wait=0.0)
    assert [m.body for m in rest] == ["3", "4"]
    assert bus.receive_many(Q, max_messages=10, max_wait=0.0) == []
    assert bus.complete_many(first + rest) == []
    assert bus.queue_depths()[Q] == QueueDepth(active=0, scheduled=0, dead_letter=0)


def test_complete_many_reports_the_messages_whose_lock_was_lost(new_bus: BusFactory) -> None:
    bus = new_bus(lock_duration_seconds=0.2)
    bus.send(Q, message_id="first", body="first")
    bus.send(Q, message_id="second", body="second")
    kept, lost = bus.receive_many(Q, max_messages=2, max_wait=0.0)
    time.sleep(0.3)  # both locks expire
    with pytest.raises(MessageLockLost):
        bus.renew_lock(kept)
    again = bus.receive_many(Q, max_messages=2, max_wait=0.0)
    assert {m.body for m in again} == {"first", "second"}
    assert bus.complete_many([kept, lost]) == [kept, lost]
    assert bus.complete_many(again) == []


def test_receive_many_dead_letters_exhausted_messages_and_returns_the_rest(new_bus: BusFactory) -> None:
    bus = new_bus(max_delivery_count=1, lock_duration_seconds=30.0)
    bus.send(Q, message_id="poison", body="poison")
    bus.send(Q, message_id="fine", body="fine")
    poison = bus.receive_many(Q, max_messages=1, max_wait=0.0)
    assert [m.body for m in poison] == ["poison"]
    bus.abandon(poison[0])  # its one delivery is spent: dead-lettered
    assert [m.body for m in bus.receive_many(Q, max_messages=5, max_wait=0.0)] == ["fine"]
    dead = bus.receive_many(Q, max_messages=5, max_wait=0.0, dead_letter=True)
    assert [m.body for m in dead] == ["poison"]
    assert dead[0].dead_letter_reason == MAX_DELIVERY_REASON


def test_stage_many_sends_all_on_commit_drops_duplicates_and_nothing_on_rollback(bus: SqlQueue) -> None:
    from shared.bus import Outgoing

    sessions = make_sessionmaker(engine_of(bus))
    bus.send(Q, message_id="already", body="first")
    with sessions() as session, session.begin():
        bus.stage_many(
            session,
            [
                Outgoing(queue=Q, message_id="a", body="a"),
                Outgoing(queue=Q, message_id="already", body="second"),
                Outgoing(queue="other", message_id="b", body="b", delay=30.0),
                Outgoing(queue=Q, message_id="a", body="a again"),
            ],
        )
    assert drain(bus) == ["first", "a"], "one of each id; the duplicate of a sent id is dropped"
    assert bus.queue_depths()["other"].scheduled == 1
    with pytest.raises(RuntimeError), sessions() as session, session.begin():
        bus.stage_many(
            session, [Outgoing(queue=Q, message_id="x", body="x"), Outgoing(queue=Q, message_id="y", body="y")]
        )
        raise RuntimeError("rolled back")
    assert drain(bus) == []


def test_waiting_receiver_wakes_on_a_send_from_another_process(new_bus: BusFactory) -> None:
    """Two SqlQueues on their own engines stand for two processes: only the database's own channel
    (NOTIFY on PostgreSQL, the wake sockets beside a SQLite file) can wake the waiting one."""
    waiting, sending = new_bus(), new_bus()
    latencies = wake_latencies(waiting, lambda message_id: sending.send(Q, message_id=message_id, body="x"))
    assert latencies[len(latencies) // 2] < 0.04, latencies
    assert latencies[-1] < 0.1, latencies


def test_complete_in_settles_with_the_callers_commit_and_not_on_rollback(bus: SqlQueue) -> None:
    sessions = make_sessionmaker(engine_of(bus))
    bus.send(Q, message_id="kept", body="kept")
    bus.send(Q, message_id="undone", body="undone")
    kept, undone = bus.receive_many(Q, max_messages=2, max_wait=0.0)
    with sessions() as session, session.begin():
        assert bus.complete_in(session, [kept])
    with pytest.raises(RuntimeError), sessions() as session, session.begin():
        assert bus.complete_in(session, [undone])
        raise RuntimeError("rolled back")
    with engine_of(bus).connect() as connection:
        states = dict(connection.execute(select(QueueMessage.message_id, QueueMessage.state)).all())
    assert states == {"kept": "done", "undone": "active"}
    bus.complete(undone)  # still locked by us: the rollback settled nothing
