"""The Service Bus outbox on a real database (SQLite and PostgreSQL): a staged message is published if
and only if its transaction commits, exactly once per row, and a relay that dies between publishing and
marking republishes under the same message_id, which Service Bus duplicate detection then drops.
Service Bus itself is a recording fake here (there is no emulator); test_servicebus_live.py covers the
real service."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusConnectionError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.bus.servicebus import ServiceBusBus
from shared.core.config import Settings
from shared.core.db import make_engine, make_sessionmaker, migrate, transaction
from shared.core.errors import TransientError
from shared.domain.models import Job, OutboxMessage
from shared.hosting.host import Relay
from shared.runtime.loop import Shutdown, serve

CONNECTION_STRING = (
    "Endpoint=sb://speechflow-test.servicebus.windows.net/;SharedAccessKeyName=app;SharedAccessKey=c2VjcmV0"
)

SendHook = Callable[[str, list[ServiceBusMessage]], None]


class Broker:
    """Every message the fake senders accepted, in order; `hook` runs after a send is recorded, so it
    can fail a send the broker already has (a relay crash between publish and mark)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[tuple[str, ServiceBusMessage]] = []
        self.hook: SendHook | None = None

    @property
    def message_ids(self) -> list[str]:
        return [str(message.message_id) for _, message in self.accepted]


class RecordingSender:
    def __init__(self, broker: Broker, queue: str) -> None:
        self.broker = broker
        self.queue = queue

    def send_messages(self, message: Any, *, timeout: float | None = None) -> None:
        batch = message if isinstance(message, list) else [message]
        with self.broker.lock:
            self.broker.accepted.extend((self.queue, m) for m in batch)
        if self.broker.hook is not None:
            self.broker.hook(self.queue, batch)

    def close(self) -> None:
        pass


class RecordingClient:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def get_queue_sender(self, queue_name: str, **options: Any) -> RecordingSender:
        return RecordingSender(self.broker, queue_name)

    def close(self) -> None:
        pass


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url, service_bus_connection_string=CONNECTION_STRING)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def make_bus(settings: Settings, engine: Engine, broker: Broker) -> Iterator[Callable[..., ServiceBusBus]]:
    buses: list[ServiceBusBus] = []

    def build(**options: Any) -> ServiceBusBus:
        buses.append(ServiceBusBus(settings, engine, client_factory=lambda: RecordingClient(broker), **options))
        return buses[-1]

    yield build
    for bus in buses:
        bus.close()


def unsent(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).where(OutboxMessage.sent_at.is_(None))) or 0


def stage_many(bus: ServiceBusBus, sessions: sessionmaker[Session], count: int, queue: str = "lid-jobs") -> None:
    with transaction(sessions) as session:
        for n in range(count):
            bus.stage(session, queue, message_id=f"job-{n}:LID:1", body=f'{{"n": {n}}}')


def test_a_rolled_back_transaction_publishes_nothing(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    bus = make_bus()
    with pytest.raises(RuntimeError, match="validation failed"), transaction(sessions) as session:
        session.add(Job(audio_filename="a.wav", workflow_type="lid_only", status="queued"))
        bus.stage(session, "job-events", message_id="job-1:START:1", body="{}")
        raise RuntimeError("validation failed")

    assert bus.flush() == 0
    assert broker.accepted == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_a_committed_message_is_published_once_and_marked_sent(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    bus = make_bus()
    with transaction(sessions) as session:
        session.add(Job(audio_filename="a.wav", workflow_type="full_pipeline", status="queued"))
        bus.stage(
            session,
            "job-events",
            message_id="job-1:START:1",
            body='{"job_id": "job-1"}',
            properties={"event": "started", "attempt": 1},
        )
        bus.stage(session, "lid-jobs", message_id="job-1:LID:2", body='{"job_id": "job-1"}', delay=120)

    before = datetime.now(UTC)
    assert bus.flush() == 2
    assert bus.flush() == 0
    assert make_bus().flush() == 0  # another relay finds nothing left either

    assert [(queue, m.message_id) for queue, m in broker.accepted] == [
        ("job-events", "job-1:START:1"),
        ("lid-jobs", "job-1:LID:2"),
    ]
    (_, started), (_, retry) = broker.accepted
    assert b"".join(started.body) == b'{"job_id": "job-1"}'
    assert started.application_properties == {"event": "started", "attempt": 1}
    assert started.content_type == "application/json"
    assert started.scheduled_enqueue_time_utc is None
    scheduled = retry.scheduled_enqueue_time_utc
    assert scheduled is not None
    assert before + timedelta(seconds=110) < scheduled <= before + timedelta(seconds=120)

    with sessions() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [row.sent_at is not None for row in rows] == [True, True]


def test_a_relay_crash_after_publishing_republishes_the_same_message_id(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    bus = make_bus()
    with transaction(sessions) as session:
        bus.stage(session, "whisper-jobs", message_id="job-7:TRANSCRIBE:1", body='{"job_id": "job-7"}')

    def crash(queue: str, batch: list[ServiceBusMessage]) -> None:
        raise ServiceBusConnectionError(message="connection lost before the acknowledgement was read")

    broker.hook = crash
    with pytest.raises(TransientError):
        bus.flush()
    assert unsent(sessions) == 1

    broker.hook = None
    assert make_bus().flush() == 1  # a restarted relay
    # Both copies carry the id that Service Bus duplicate detection keys on: the second is dropped there.
    assert broker.message_ids == ["job-7:TRANSCRIBE:1", "job-7:TRANSCRIBE:1"]
    assert unsent(sessions) == 0


def test_rows_of_queues_published_before_a_failure_stay_sent(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    bus = make_bus()
    with transaction(sessions) as session:
        bus.stage(session, "lid-jobs", message_id="job-1:LID:1", body="{}")
        bus.stage(session, "azure-ai-jobs", message_id="job-2:SUMMARIZE:1", body="{}")

    def refuse_azure_ai(queue: str, batch: list[ServiceBusMessage]) -> None:
        if queue == "azure-ai-jobs":
            raise ServiceBusConnectionError()

    broker.hook = refuse_azure_ai
    with pytest.raises(TransientError):
        bus.flush()
    with sessions() as session:
        still_unsent = session.scalars(select(OutboxMessage.message_id).where(OutboxMessage.sent_at.is_(None)))
        assert list(still_unsent) == ["job-2:SUMMARIZE:1"]


def test_a_batch_too_large_for_one_transfer_is_sent_message_by_message(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    bus = make_bus()
    stage_many(bus, sessions, 3)
    refused: list[int] = []

    def refuse_lists(queue: str, batch: list[ServiceBusMessage]) -> None:
        if len(batch) > 1:
            with broker.lock:  # the service accepted none of this transfer
                del broker.accepted[-len(batch) :]
            refused.append(len(batch))
            raise MessageSizeExceededError(message="batch over the frame size")

    broker.hook = refuse_lists
    assert bus.flush() == 3
    assert refused == [3]
    assert broker.message_ids == ["job-0:LID:1", "job-1:LID:1", "job-2:LID:1"]


def test_flush_drains_more_rows_than_one_batch_in_order(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    bus = make_bus(relay_batch_size=4)
    stage_many(bus, sessions, 10)
    assert bus.flush() == 10
    assert broker.message_ids == [f"job-{n}:LID:1" for n in range(10)]


def test_two_relays_racing_publish_every_row_once(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    stage_many(make_bus(), sessions, 30)
    broker.hook = lambda queue, batch: time.sleep(0.01)  # a publish takes a while: the relays overlap
    relays = [make_bus(relay_batch_size=3) for _ in range(2)]
    counts: list[int] = []
    threads = [threading.Thread(target=lambda bus=bus: counts.append(bus.flush())) for bus in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(counts, reverse=True)[0] > 0 and sum(counts) == 30
    assert sorted(broker.message_ids) == sorted(f"job-{n}:LID:1" for n in range(30))
    assert unsent(sessions) == 0


def test_sent_rows_older_than_a_day_are_purged(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session]
) -> None:
    bus = make_bus()
    stage_many(bus, sessions, 3)
    assert bus.flush() == 3
    stage_many(bus, sessions, 1, queue="whisper-jobs")  # not yet sent: never purged
    with transaction(sessions) as session:
        oldest = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).first()
        assert oldest is not None
        oldest.sent_at = datetime.now(UTC) - timedelta(days=2)

    assert bus.purge_sent() == 1
    with sessions() as session:
        remaining = session.scalars(select(OutboxMessage.message_id).order_by(OutboxMessage.id)).all()
    assert remaining == ["job-1:LID:1", "job-2:LID:1", "job-0:LID:1"]


def run_relay(bus: ServiceBusBus, stop: threading.Event, interval: float) -> None:
    """The relay as the local host runs it: a poller of the consume loop, until `stop` is set."""
    relay = Relay(bus)
    relay.idle_seconds = interval
    shutdown = Shutdown(1.0)
    shutdown.stopping = stop
    serve([relay], shutdown=shutdown)


def test_run_relay_publishes_until_stopped(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    bus = make_bus()
    stop = threading.Event()
    relay = threading.Thread(target=run_relay, args=(bus, stop, 0.05))
    relay.start()
    try:
        stage_many(bus, sessions, 2)
        deadline = time.monotonic() + 10
        while len(broker.accepted) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        relay.join(timeout=10)
    assert not relay.is_alive()
    assert broker.message_ids == ["job-0:LID:1", "job-1:LID:1"]
    assert unsent(sessions) == 0


def test_run_relay_survives_a_failing_publish(
    make_bus: Callable[..., ServiceBusBus], sessions: sessionmaker[Session], broker: Broker
) -> None:
    bus = make_bus()
    stage_many(bus, sessions, 1)
    failures: list[str] = []

    def fail_twice(queue: str, batch: list[ServiceBusMessage]) -> None:
        if len(failures) < 2:
            failures.append(queue)
            raise ServiceBusConnectionError()

    broker.hook = fail_twice
    stop = threading.Event()
    relay = threading.Thread(target=run_relay, args=(bus, stop, 0.02))
    relay.start()
    try:
        deadline = time.monotonic() + 10
        while unsent(sessions) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        relay.join(timeout=10)
    assert len(failures) == 2
    assert broker.message_ids == ["job-0:LID:1"] * 3
    assert unsent(sessions) == 0


@pytest.mark.postgres
def test_postgres_relays_lock_disjoint_rows_and_run_in_parallel(
    pg_database_factory: Callable[[], str], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """With FOR UPDATE SKIP LOCKED a second relay takes the next rows instead of waiting for the
    first relay's: both are inside a publish at the same moment, on different rows. (Plain FOR
    UPDATE would block the second relay and break the barrier; no row lock would publish twice.)"""
    url = pg_database_factory()
    migrate(Settings(database_url=url, speechflow_home=tmp_path / "home"))
    settings = make_settings(database_url=url, service_bus_connection_string=CONNECTION_STRING)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    broker = Broker()
    both_publishing = threading.Barrier(2, timeout=5)
    first_publish_of: dict[int, bool] = {}

    def meet_the_other_relay(queue: str, batch: list[ServiceBusMessage]) -> None:
        thread = threading.get_ident()
        if not first_publish_of.get(thread):
            first_publish_of[thread] = True
            both_publishing.wait()

    broker.hook = meet_the_other_relay
    relays = [
        ServiceBusBus(settings, engine, client_factory=lambda: RecordingClient(broker), relay_batch_size=5)
        for _ in range(2)
    ]
    try:
        stage_many(relays[0], sessions, 40)
        results: dict[int, int | BaseException] = {}

        def run(index: int) -> None:
            try:
                results[index] = relays[index].flush()
            except BaseException as error:
                results[index] = error

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert len(results) == 2
        assert all(isinstance(count, int) and count > 0 for count in results.values()), results
        assert sum(results.values()) == 40  # type: ignore[arg-type]
        assert sorted(broker.message_ids) == sorted(f"job-{n}:LID:1" for n in range(40))
        assert unsent(sessions) == 0
    finally:
        for relay in relays:
            relay.close()
        engine.dispose()
