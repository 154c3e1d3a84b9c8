"""The Service Bus adapter against a real namespace. Opt-in: it runs only when
SERVICE_BUS_CONNECTION_STRING is set and SPEECHFLOW_LIVE_QUEUE names a queue dedicated to this test
(create it with duplicate detection on, as infra/bicep does; messages left on it by an earlier run are
completed and thrown away).

    SERVICE_BUS_CONNECTION_STRING='Endpoint=sb://…' SPEECHFLOW_LIVE_QUEUE=speechflow-live \\
        .venv/bin/pytest -m live tests/integration/bus/test_servicebus_live.py
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.bus import ReceivedMessage
from shared.bus.servicebus import ServiceBusBus
from shared.core.config import Settings
from shared.core.db import make_engine, make_sessionmaker, migrate, transaction

pytestmark = pytest.mark.live

ARRIVAL_TIMEOUT = 60.0


@pytest.fixture
def queue() -> str:
    if Settings().service_bus_connection_string is None:
        pytest.skip("SERVICE_BUS_CONNECTION_STRING is not set (opt-in live Service Bus test)")
    # Only this test needs the name, so it is read here rather than given a Settings field.
    name = os.environ.get("SPEECHFLOW_LIVE_QUEUE")
    if not name:
        pytest.skip("SPEECHFLOW_LIVE_QUEUE is not set (opt-in live Service Bus test)")
    return name


@pytest.fixture
def settings(queue: str, tmp_path: Path) -> Settings:
    every_queue = {name: queue for name in ("job_events_queue", "lid_queue", "whisper_queue", "azure_ai_queue")}
    settings = Settings(
        speechflow_home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'live.db'}",
        **every_queue,  # type: ignore[arg-type]
    )
    migrate(settings)
    return settings


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def bus(settings: Settings, engine: Engine) -> Iterator[ServiceBusBus]:
    bus = ServiceBusBus(settings, engine)
    yield bus
    bus.close()


def new_id(step: str) -> str:
    return f"{uuid.uuid4()}:{step}:1"


def receive_ours(
    bus: ServiceBusBus, queue: str, message_id: str, *, dead_letter: bool = False, timeout: float = ARRIVAL_TIMEOUT
) -> ReceivedMessage:
    """The message with `message_id`, completing anything else found on the dedicated queue."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = bus.receive(queue, max_wait=min(5.0, remaining), dead_letter=dead_letter)
        if message is None:
            continue
        if message.message_id == message_id:
            return message
        bus.complete(message)
    raise AssertionError(f"{message_id} did not arrive on {queue} within {timeout}s")


def nothing_more(bus: ServiceBusBus, queue: str, message_id: str, *, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while (remaining := deadline - time.monotonic()) > 0:
        message = bus.receive(queue, max_wait=remaining)
        if message is None:
            return True
        if message.message_id == message_id:
            bus.complete(message)
            return False
        bus.complete(message)
    return True


def test_send_receive_renew_complete(bus: ServiceBusBus, queue: str) -> None:
    message_id = new_id("LID")
    bus.send(queue, message_id=message_id, body='{"job_id": "live"}', properties={"step_type": "LID", "attempt": 1})

    message = receive_ours(bus, queue, message_id)
    assert message.body == '{"job_id": "live"}'
    assert message.properties == {"step_type": "LID", "attempt": 1}
    assert message.delivery_count == 1
    assert message.locked_until > time.time()
    assert bus.renew_lock(message) > time.time()
    bus.complete(message)
    assert nothing_more(bus, queue, message_id, wait=3)


def test_abandoned_message_is_delivered_again(bus: ServiceBusBus, queue: str) -> None:
    message_id = new_id("TRANSCRIBE")
    bus.send(queue, message_id=message_id, body="{}")
    first = receive_ours(bus, queue, message_id)
    bus.abandon(first)
    second = receive_ours(bus, queue, message_id)
    assert second.delivery_count == first.delivery_count + 1
    bus.complete(second)


def test_scheduled_message_arrives_after_its_delay(bus: ServiceBusBus, queue: str) -> None:
    message_id = new_id("TRANSLATE")
    sent_at = time.time()
    bus.send(queue, message_id=message_id, body="{}", delay=8.0)
    assert nothing_more(bus, queue, message_id, wait=2)
    message = receive_ours(bus, queue, message_id)
    assert time.time() - sent_at >= 7.0  # a second's leeway for clock skew between us and the broker
    bus.complete(message)


def test_dead_letter_round_trip(bus: ServiceBusBus, queue: str) -> None:
    message_id = new_id("SUMMARIZE")
    bus.send(queue, message_id=message_id, body='{"job_id": "live"}')
    message = receive_ours(bus, queue, message_id)
    bus.dead_letter(message, reason="bad-audio", description="not an audio file")

    parked = receive_ours(bus, queue, message_id, dead_letter=True)
    assert parked.body == '{"job_id": "live"}'
    assert parked.dead_letter_reason == "bad-audio"
    assert parked.dead_letter_description == "not an audio file"
    bus.complete(parked)
    assert nothing_more(bus, queue, message_id, wait=2)


def test_queue_depths_of_the_live_queue(bus: ServiceBusBus, queue: str) -> None:
    # Runtime counts lag the broker by seconds, so this only checks the management call works.
    [(name, depth)] = bus.queue_depths().items()
    assert name == queue
    assert min(depth.active, depth.scheduled, depth.dead_letter) >= 0


def test_outbox_relay_publishes_to_the_real_queue(bus: ServiceBusBus, queue: str, engine: Engine) -> None:
    message_id = new_id("LID")
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        bus.stage(session, queue, message_id=message_id, body='{"job_id": "outbox"}')
    assert bus.flush() == 1
    message = receive_ours(bus, queue, message_id)
    assert message.body == '{"job_id": "outbox"}'
    bus.complete(message)


def test_a_resent_message_id_is_dropped_by_duplicate_detection(
    bus: ServiceBusBus, queue: str, settings: Settings
) -> None:
    from azure.servicebus.management import ServiceBusAdministrationClient

    assert settings.service_bus_connection_string is not None
    with ServiceBusAdministrationClient.from_connection_string(
        settings.service_bus_connection_string.get_secret_value()
    ) as admin:
        if not admin.get_queue(queue).requires_duplicate_detection:
            pytest.skip(f"queue {queue} has duplicate detection off")
    message_id = new_id("LID")
    bus.send(queue, message_id=message_id, body="{}")
    bus.send(queue, message_id=message_id, body="{}")
    bus.complete(receive_ours(bus, queue, message_id))
    assert nothing_more(bus, queue, message_id, wait=5)
