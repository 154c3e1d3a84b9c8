"""The Service Bus adapter at the SDK boundary: fake client, senders and receivers record what the
adapter asks of the SDK; messages handed to it are real `ServiceBusReceivedMessage`s decoded from AMQP
bytes, exactly as the SDK decodes them off the wire (bytes property keys, zero-based delivery count)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageHeader, AmqpMessageProperties
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessagingEntityNotFoundError,
    OperationTimeoutError,
    ServiceBusCommunicationError,
    ServiceBusConnectionError,
    ServiceBusServerBusyError,
    SessionLockLostError,
)
from sqlalchemy import create_engine

from shared.bus import QueueDepth, ReceivedMessage
from shared.bus.servicebus import ServiceBusBus
from shared.core.config import Settings
from shared.core.errors import ConfigurationError, MessageLockLost, TransientError
from shared.domain.registry import all_queues

CONNECTION_STRING = (
    "Endpoint=sb://speechflow-test.servicebus.windows.net/;SharedAccessKeyName=app;SharedAccessKey=c2VjcmV0"
)


def sdk_message(
    *,
    message_id: str = "job-1:LID:1",
    body: bytes = b'{"job_id": "job-1"}',
    properties: dict[str, Any] | None = None,
    delivery_count: int = 0,
    locked_until: datetime | None = None,
    enqueued: datetime | None = None,
) -> ServiceBusReceivedMessage:
    """A message as a peek-lock receive hands it over: encoded to AMQP, decoded by the SDK."""
    # The encoder is SDK-internal; it is used here only to produce wire bytes for the public from_bytes.
    from azure.servicebus._transport._pyamqp_transport import PyamqpTransport

    now = datetime.now(UTC)
    annotated = AmqpAnnotatedMessage(
        data_body=body,
        header=AmqpMessageHeader(delivery_count=delivery_count),
        properties=AmqpMessageProperties(message_id=message_id),
        application_properties=properties or {},
        annotations={
            b"x-opt-enqueued-time": int((enqueued or now).timestamp() * 1000),
            b"x-opt-locked-until": int((locked_until or now + timedelta(seconds=60)).timestamp() * 1000),
        },
        delivery_annotations={b"x-opt-lock-token": uuid.uuid4()},
    )
    outgoing = ServiceBusMessage(
        None, message=PyamqpTransport.to_outgoing_amqp_message(annotated), raw_amqp_message=annotated
    )
    return ServiceBusReceivedMessage.from_bytes(bytes(PyamqpTransport.encode_message(outgoing)))


class FakeSender:
    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.sent: list[ServiceBusMessage] = []
        self.error: Exception | None = None
        self.closed = False

    def send_messages(self, message: Any, *, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error
        self.sent.extend(message if isinstance(message, list) else [message])

    def close(self) -> None:
        self.closed = True


class FakeReceiver:
    def __init__(self, queue: str, options: dict[str, Any]) -> None:
        self.queue = queue
        self.options = options
        self.inbox: list[ServiceBusReceivedMessage] = []
        self.waits: list[tuple[int | None, float | None]] = []
        self.settled: list[tuple[str, ServiceBusReceivedMessage, dict[str, Any]]] = []
        self.error: Exception | None = None
        self.renewed_until = datetime.now(UTC) + timedelta(seconds=90)
        self.closed = False

    def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[ServiceBusReceivedMessage]:
        self.waits.append((max_message_count, max_wait_time))
        if self.error is not None:
            raise self.error
        count = max_message_count or 1
        taken, self.inbox = self.inbox[:count], self.inbox[count:]
        return taken

    def _settle(self, action: str, message: ServiceBusReceivedMessage, **details: Any) -> None:
        if self.error is not None:
            raise self.error
        self.settled.append((action, message, details))

    def complete_message(self, message: ServiceBusReceivedMessage) -> None:
        self._settle("complete", message)

    def abandon_message(self, message: ServiceBusReceivedMessage) -> None:
        self._settle("abandon", message)

    def dead_letter_message(
        self,
        message: ServiceBusReceivedMessage,
        reason: str | None = None,
        error_description: str | None = None,
    ) -> None:
        self._settle("dead_letter", message, reason=reason, error_description=error_description)

    def renew_message_lock(self, message: ServiceBusReceivedMessage, *, timeout: float | None = None) -> datetime:
        self._settle("renew", message)
        return self.renewed_until

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self) -> None:
        self.senders: list[FakeSender] = []
        self.receivers: list[FakeReceiver] = []
        self.closed = False

    def get_queue_sender(self, queue_name: str, **options: Any) -> FakeSender:
        sender = FakeSender(queue_name)
        self.senders.append(sender)
        return sender

    def get_queue_receiver(self, queue_name: str, **options: Any) -> FakeReceiver:
        receiver = FakeReceiver(queue_name, options)
        self.receivers.append(receiver)
        return receiver

    def receiver(self, queue: str, *, dead_letter: bool = False) -> FakeReceiver:
        sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead_letter else None
        [receiver] = [r for r in self.receivers if r.queue == queue and r.options["sub_queue"] == sub_queue]
        return receiver

    def close(self) -> None:
        self.closed = True


class FakeAdmin:
    def __init__(self, counts: dict[str, tuple[int, int, int]]) -> None:
        self.counts = counts
        self.asked: list[str] = []
        self.closed = False

    def get_queue_runtime_properties(self, queue_name: str) -> Any:
        self.asked.append(queue_name)
        if queue_name not in self.counts:
            raise ResourceNotFoundError(f"no queue {queue_name}")
        active, scheduled, dead = self.counts[queue_name]
        return SimpleNamespace(
            active_message_count=active, scheduled_message_count=scheduled, dead_letter_message_count=dead
        )

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(service_bus_connection_string=CONNECTION_STRING)


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def bus(settings: Settings, client: FakeClient) -> ServiceBusBus:
    # An in-memory SQLite engine connects on first use only, which these tests never make.
    return ServiceBusBus(settings, create_engine("sqlite://"), client_factory=lambda: client)


def body_of(message: ServiceBusMessage) -> str:
    return b"".join(message.body).decode()


def receive_one(bus: ServiceBusBus, client: FakeClient, queue: str, raw: Any, *, dead_letter: bool = False) -> Any:
    """Prime the receiver for `queue` with `raw` and receive it through the adapter."""
    assert bus.receive(queue, max_wait=0.5, dead_letter=dead_letter) is None  # creates the receiver
    client.receiver(queue, dead_letter=dead_letter).inbox.append(raw)
    received = bus.receive(queue, max_wait=0.5, dead_letter=dead_letter)
    assert received is not None
    return received


def test_refuses_settings_without_service_bus(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigurationError):
        ServiceBusBus(make_settings(), create_engine("sqlite://"))


def test_client_is_created_on_first_use_and_one_sender_serves_a_queue(settings: Settings) -> None:
    created: list[FakeClient] = []

    def factory() -> FakeClient:
        created.append(FakeClient())
        return created[-1]

    bus = ServiceBusBus(settings, create_engine("sqlite://"), client_factory=factory)  # type: ignore[arg-type]
    assert created == []
    bus.send("lid-jobs", message_id="a", body="{}")
    bus.send("lid-jobs", message_id="b", body="{}")
    bus.send("whisper-jobs", message_id="c", body="{}")
    [client] = created
    assert [s.queue for s in client.senders] == ["lid-jobs", "whisper-jobs"]
    assert [m.message_id for m in client.senders[0].sent] == ["a", "b"]


def test_default_client_comes_from_the_connection_string(settings: Settings) -> None:
    bus = ServiceBusBus(settings, create_engine("sqlite://"))
    client = bus._default_client()
    try:
        assert isinstance(client, ServiceBusClient)
        assert client.fully_qualified_namespace == "speechflow-test.servicebus.windows.net"
    finally:
        client.close()


def test_default_client_uses_azure_identity_for_a_namespace(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    import azure.identity

    credential = SimpleNamespace(get_token=lambda *scopes, **kwargs: None)
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda: credential)
    settings = make_settings(service_bus_namespace="speechflow-prod.servicebus.windows.net")
    client = ServiceBusBus(settings, create_engine("sqlite://"))._default_client()
    try:
        assert client.fully_qualified_namespace == "speechflow-prod.servicebus.windows.net"
        assert client._credential is credential
    finally:
        client.close()


def test_send_builds_the_message(bus: ServiceBusBus, client: FakeClient) -> None:
    bus.send(
        "job-events",
        message_id="job-1:LID:1",
        body='{"job_id": "job-1"}',
        properties={"step_type": "LID", "attempt": 1},
    )
    [message] = client.senders[0].sent
    assert message.message_id == "job-1:LID:1"
    assert body_of(message) == '{"job_id": "job-1"}'
    assert message.application_properties == {"step_type": "LID", "attempt": 1}
    assert message.content_type == "application/json"
    assert message.scheduled_enqueue_time_utc is None


def test_send_with_a_delay_schedules_the_message(bus: ServiceBusBus, client: FakeClient) -> None:
    before = datetime.now(UTC)
    bus.send("lid-jobs", message_id="job-1:LID:2", body="{}", delay=30.0)
    [message] = client.senders[0].sent
    scheduled = message.scheduled_enqueue_time_utc
    assert scheduled is not None
    assert before + timedelta(seconds=30) <= scheduled <= datetime.now(UTC) + timedelta(seconds=30)
    assert message.application_properties is None


def test_receivers_are_peek_lock_without_prefetch_and_dead_letter_uses_the_sub_queue(
    bus: ServiceBusBus, client: FakeClient
) -> None:
    assert bus.receive("lid-jobs", max_wait=2.0) is None
    assert bus.receive("lid-jobs", max_wait=2.0, dead_letter=True) is None
    assert bus.receive("lid-jobs", max_wait=2.0) is None
    main, dead = client.receivers
    assert main.options == {
        "sub_queue": None,
        "receive_mode": ServiceBusReceiveMode.PEEK_LOCK,
        "prefetch_count": 0,
    }
    assert dead.options["sub_queue"] is ServiceBusSubQueue.DEAD_LETTER
    assert dead.options["receive_mode"] is ServiceBusReceiveMode.PEEK_LOCK
    assert main.waits == [(1, 2.0), (1, 2.0)]


def test_a_poll_waits_the_shortest_wait_the_sdk_accepts(bus: ServiceBusBus, client: FakeClient) -> None:
    assert bus.receive("lid-jobs", max_wait=0) is None
    assert client.receivers[0].waits == [(1, 0.1)]


def test_received_message_is_converted(bus: ServiceBusBus, client: FakeClient) -> None:
    locked_until = datetime.now(UTC) + timedelta(seconds=45)
    enqueued = datetime.now(UTC) - timedelta(seconds=5)
    raw = sdk_message(
        message_id="job-1:TRANSCRIBE:1",
        body='{"job_id": "job-1", "text": "grüße"}'.encode(),
        properties={"step_type": "TRANSCRIBE", "attempt": 2},
        delivery_count=0,
        locked_until=locked_until,
        enqueued=enqueued,
    )
    received = receive_one(bus, client, "whisper-jobs", raw)

    assert isinstance(received, ReceivedMessage)
    assert received.queue == "whisper-jobs"
    assert received.message_id == "job-1:TRANSCRIBE:1"
    assert received.body == '{"job_id": "job-1", "text": "grüße"}'
    assert received.delivery_count == 1  # the wire's zero-based count, as our port counts
    assert received.lock_token == str(raw.lock_token)
    assert received.locked_until == pytest.approx(locked_until.timestamp(), abs=0.01)
    assert received.enqueued_at == pytest.approx(enqueued.timestamp(), abs=0.01)
    assert received.properties == {"step_type": "TRANSCRIBE", "attempt": 2}
    assert received.dead_letter_reason is None
    assert received.raw is raw


def test_redelivery_count_follows_the_header(bus: ServiceBusBus, client: FakeClient) -> None:
    received = receive_one(bus, client, "lid-jobs", sdk_message(delivery_count=3))
    assert received.delivery_count == 4


def test_dead_lettered_message_carries_reason_and_description(bus: ServiceBusBus, client: FakeClient) -> None:
    raw = sdk_message(properties={"DeadLetterReason": "bad-audio", "DeadLetterErrorDescription": "not a WAV file"})
    received = receive_one(bus, client, "lid-jobs", raw, dead_letter=True)
    assert received.dead_letter_reason == "bad-audio"
    assert received.dead_letter_description == "not a WAV file"


def test_settlement_goes_through_the_receiver_that_received(bus: ServiceBusBus, client: FakeClient) -> None:
    first = receive_one(bus, client, "lid-jobs", sdk_message(message_id="m1"))
    parked = receive_one(bus, client, "lid-jobs", sdk_message(message_id="m0"), dead_letter=True)
    other = receive_one(bus, client, "whisper-jobs", sdk_message(message_id="m2"))
    third = receive_one(bus, client, "lid-jobs", sdk_message(message_id="m3"))

    bus.complete(parked)
    bus.dead_letter(first, reason="bad-audio", description="not a WAV file")
    bus.abandon(other)
    bus.complete(third)

    lid = client.receiver("lid-jobs")
    lid_dead = client.receiver("lid-jobs", dead_letter=True)
    whisper = client.receiver("whisper-jobs")
    assert [(a, m.message_id, d) for a, m, d in lid.settled] == [
        ("dead_letter", "m1", {"reason": "bad-audio", "error_description": "not a WAV file"}),
        ("complete", "m3", {}),
    ]
    assert [(a, m.message_id) for a, m, _ in lid_dead.settled] == [("complete", "m0")]
    assert [(a, m.message_id) for a, m, _ in whisper.settled] == [("abandon", "m2")]
    assert lid.settled[0][1] is first.raw


def test_renew_lock_returns_and_records_the_new_expiry(bus: ServiceBusBus, client: FakeClient) -> None:
    received = receive_one(bus, client, "lid-jobs", sdk_message())
    receiver = client.receiver("lid-jobs")
    expiry = bus.renew_lock(received)
    assert expiry == pytest.approx(receiver.renewed_until.timestamp())
    assert received.locked_until == expiry
    assert [a for a, _, _ in receiver.settled] == ["renew"]


def test_a_message_this_bus_did_not_receive_cannot_be_settled(bus: ServiceBusBus, client: FakeClient) -> None:
    foreign = ReceivedMessage(
        queue="lid-jobs",
        message_id="x",
        body="{}",
        delivery_count=1,
        lock_token=str(uuid.uuid4()),
        locked_until=time.time() + 60,
        enqueued_at=time.time(),
        raw=sdk_message(),
    )
    with pytest.raises(MessageLockLost):
        bus.complete(foreign)


def test_a_settled_message_cannot_be_settled_again(bus: ServiceBusBus, client: FakeClient) -> None:
    received = receive_one(bus, client, "lid-jobs", sdk_message())
    bus.complete(received)
    with pytest.raises(MessageLockLost):
        bus.abandon(received)
    assert len(client.receiver("lid-jobs").settled) == 1


SETTLE_ERRORS = [
    (MessageLockLostError(), MessageLockLost),
    (SessionLockLostError(), MessageLockLost),
    (MessageAlreadySettled(action="complete"), MessageLockLost),
    (ServiceBusConnectionError(), TransientError),
    (ServiceBusCommunicationError(), TransientError),
    (OperationTimeoutError(), TransientError),
    (ServiceBusServerBusyError(), TransientError),
]


@pytest.mark.parametrize(("sdk_error", "expected"), SETTLE_ERRORS, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("action", ["complete", "abandon", "dead_letter", "renew_lock"])
def test_settlement_errors_are_translated(
    bus: ServiceBusBus, client: FakeClient, sdk_error: Exception, expected: type[Exception], action: str
) -> None:
    received = receive_one(bus, client, "lid-jobs", sdk_message())
    client.receiver("lid-jobs").error = sdk_error
    settle: Callable[[], object] = {
        "complete": lambda: bus.complete(received),
        "abandon": lambda: bus.abandon(received),
        "dead_letter": lambda: bus.dead_letter(received, reason="r", description="d"),
        "renew_lock": lambda: bus.renew_lock(received),
    }[action]
    with pytest.raises(expected) as raised:
        settle()
    assert raised.value.__cause__ is sdk_error


@pytest.mark.parametrize(
    "sdk_error",
    [ServiceBusConnectionError(), OperationTimeoutError(), ServiceBusServerBusyError()],
    ids=lambda v: type(v).__name__,
)
def test_send_and_receive_failures_are_transient(bus: ServiceBusBus, client: FakeClient, sdk_error: Exception) -> None:
    bus.send("lid-jobs", message_id="a", body="{}")
    assert bus.receive("lid-jobs", max_wait=1) is None
    client.senders[0].error = sdk_error
    client.receivers[0].error = sdk_error
    with pytest.raises(TransientError):
        bus.send("lid-jobs", message_id="b", body="{}")
    with pytest.raises(TransientError):
        bus.receive("lid-jobs", max_wait=1)


def test_other_sdk_errors_are_not_disguised(bus: ServiceBusBus, client: FakeClient) -> None:
    bus.send("lid-jobs", message_id="a", body="{}")
    client.senders[0].error = MessagingEntityNotFoundError()
    with pytest.raises(MessagingEntityNotFoundError):
        bus.send("lid-jobs", message_id="b", body="{}")


def test_queue_depths_read_runtime_properties_of_every_queue(settings: Settings) -> None:
    known = {
        "job-events": (3, 0, 0),
        "lid-jobs": (7, 2, 1),
        "whisper-jobs": (0, 0, 4),
        "azure-ai-jobs": (1, 1, 0),
    }
    # Every other queue of the step registry is there too, empty.
    admin = FakeAdmin({queue: known.get(queue, (0, 0, 0)) for queue in all_queues(settings)})
    bus = ServiceBusBus(settings, create_engine("sqlite://"), client_factory=FakeClient, admin_factory=lambda: admin)
    depths = bus.queue_depths()
    assert admin.asked == all_queues(settings)
    assert {queue: depths[queue] for queue in known} == {
        "job-events": QueueDepth(active=3, scheduled=0, dead_letter=0),
        "lid-jobs": QueueDepth(active=7, scheduled=2, dead_letter=1),
        "whisper-jobs": QueueDepth(active=0, scheduled=0, dead_letter=4),
        "azure-ai-jobs": QueueDepth(active=1, scheduled=1, dead_letter=0),
    }
    assert set(depths) == set(all_queues(settings))


def test_a_missing_queue_is_a_configuration_error(settings: Settings) -> None:
    admin = FakeAdmin({queue: (0, 0, 0) for queue in all_queues(settings) if queue != "lid-jobs"})
    bus = ServiceBusBus(settings, create_engine("sqlite://"), admin_factory=lambda: admin)
    with pytest.raises(ConfigurationError, match="lid-jobs"):
        bus.queue_depths()


def test_close_closes_every_handler_and_a_later_call_starts_afresh(settings: Settings) -> None:
    clients: list[FakeClient] = []
    admin = FakeAdmin({q: (0, 0, 0) for q in all_queues(settings)})

    def factory() -> FakeClient:
        clients.append(FakeClient())
        return clients[-1]

    bus = ServiceBusBus(settings, create_engine("sqlite://"), client_factory=factory, admin_factory=lambda: admin)
    bus.send("lid-jobs", message_id="a", body="{}")
    bus.receive("lid-jobs", max_wait=1)
    bus.receive("lid-jobs", max_wait=1, dead_letter=True)
    bus.queue_depths()
    bus.close()

    [client] = clients
    assert client.closed and admin.closed
    assert all(s.closed for s in client.senders) and all(r.closed for r in client.receivers)
    bus.send("lid-jobs", message_id="b", body="{}")
    assert len(clients) == 2 and [m.message_id for m in clients[1].senders[0].sent] == ["b"]


def test_receive_many_asks_for_a_batch_and_complete_many_reports_lost_locks(
    bus: ServiceBusBus, client: FakeClient
) -> None:
    assert bus.receive_many("job-events", max_messages=3, max_wait=0.5) == []
    receiver = client.receiver("job-events")
    receiver.inbox.extend(sdk_message(message_id=f"e{n}") for n in range(4))
    batch = bus.receive_many("job-events", max_messages=3, max_wait=0.5)
    assert [m.message_id for m in batch] == ["e0", "e1", "e2"]
    assert receiver.waits[-1][0] == 3
    receiver.error = MessageLockLostError(message="lock expired")
    assert bus.complete_many(batch[:1]) == batch[:1]
    receiver.error = None
    assert bus.complete_many(batch[1:]) == []
    assert [(a, m.message_id) for a, m, _ in receiver.settled] == [("complete", "e1"), ("complete", "e2")]


def test_service_bus_cannot_settle_inside_a_database_transaction(bus: ServiceBusBus) -> None:
    assert bus.complete_in(None, []) is False  # type: ignore[arg-type]
    assert bus.shares_database is False
