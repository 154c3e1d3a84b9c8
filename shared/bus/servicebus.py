"""MessageBus on Azure Service Bus, with a transactional outbox.

`stage()` writes an `outbox` row in the caller's transaction, so a state change and the message it
causes commit together (docs/ARCHITECTURE.md, rule 1); `flush()` is the relay that publishes committed rows. The
relay marks a row sent only after Service Bus acknowledged it, so a crash in between publishes the row
again, with the same `message_id`: the queue's duplicate detection (enabled in the Bicep, window
`QUEUE_DUPLICATE_DETECTION_SECONDS`) drops the second copy. On PostgreSQL the relay locks the rows it
publishes with `FOR UPDATE SKIP LOCKED`, so any number of relays can run side by side.

The SDK client is created on first use (nothing touches the network in `__init__`); there is one
sender per queue and one peek-lock receiver per (queue, dead-letter sub-queue), both kept until
`close()`. SDK exceptions are translated at this boundary: a lost or settled lock becomes
`MessageLockLost`, a connection, timeout or throttling failure becomes `TransientError`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageSizeExceededError,
    OperationTimeoutError,
    ServiceBusCommunicationError,
    ServiceBusConnectionError,
    ServiceBusServerBusyError,
    SessionLockLostError,
)
from azure.servicebus.management import ServiceBusAdministrationClient
from sqlalchemy import delete, select

from shared.bus.port import Outgoing, QueueDepth, ReceivedMessage
from shared.core.db import make_sessionmaker, transaction
from shared.core.errors import ConfigurationError, MessageLockLost, TransientError
from shared.domain.models import OutboxMessage, utcnow
from shared.domain.registry import all_queues

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from shared.core.config import Settings

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
RELAY_BATCH_SIZE = 20
"""Rows one relay transaction locks and publishes; small, so the row locks are held briefly."""
SENT_RETENTION = timedelta(days=1)
"""Sent outbox rows are kept this long (for inspection), then purged by the relay."""
PURGE_EVERY_SECONDS = 3600.0
MIN_RECEIVE_WAIT_SECONDS = 0.1
"""The SDK refuses a wait of 0; a poll waits this long instead."""

_LOCK_LOST_ERRORS = (MessageLockLostError, SessionLockLostError, MessageAlreadySettled)
_TRANSIENT_ERRORS = (
    ServiceBusConnectionError,
    ServiceBusCommunicationError,
    OperationTimeoutError,
    ServiceBusServerBusyError,
    ServiceRequestError,
)


@contextmanager
def _translated_errors(action: str) -> Iterator[None]:
    """Raise our errors for the SDK's, keeping the SDK's as the cause."""
    try:
        yield
    except _LOCK_LOST_ERRORS as error:
        raise MessageLockLost(f"{action}: {error}") from error
    except _TRANSIENT_ERRORS as error:
        raise TransientError(f"{action}: Service Bus unavailable: {error}") from error


def build_message(
    *,
    message_id: str,
    body: str,
    properties: dict[str, Any] | None,
    scheduled_at: datetime | None,
) -> ServiceBusMessage:
    """The one way SpeechFlow messages are built, for direct sends and the relay alike. A schedule
    in the past (a relay catching up) is sent for immediate delivery."""
    # Service Bus carries primitive property values only (str, int, float, bool, bytes, UUID).
    application_properties: dict[str | bytes, Any] | None = (
        {key: value for key, value in properties.items()} if properties else None
    )
    message = ServiceBusMessage(
        body,
        message_id=message_id,
        application_properties=application_properties,
        content_type=CONTENT_TYPE,
    )
    if scheduled_at is not None and scheduled_at > utcnow():
        message.scheduled_enqueue_time_utc = scheduled_at
    return message


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _body_text(body: Any) -> str:
    # A data body arrives as an iterable of byte sections (one, for every message SpeechFlow sends).
    if isinstance(body, bytes | bytearray):
        return bytes(body).decode("utf-8")
    if isinstance(body, str):
        return body
    return b"".join(bytes(section) for section in body).decode("utf-8")


def _epoch(moment: datetime | None, default: float) -> float:
    return moment.timestamp() if moment is not None else default


class ServiceBusBus:
    """The MessageBus port on Azure Service Bus (shared.bus.MessageBus)."""

    shares_database = False

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        client_factory: Callable[[], ServiceBusClient] | None = None,
        admin_factory: Callable[[], ServiceBusAdministrationClient] | None = None,
        relay_batch_size: int = RELAY_BATCH_SIZE,
    ) -> None:
        if not settings.uses_service_bus:
            raise ConfigurationError("Service Bus needs SERVICE_BUS_CONNECTION_STRING or SERVICE_BUS_NAMESPACE")
        self._settings = settings
        self._engine = engine
        self._last_purge = float("-inf")
        self._sessions = make_sessionmaker(engine)
        self._client_factory = client_factory or self._default_client
        self._admin_factory = admin_factory or self._default_admin
        self._relay_batch_size = relay_batch_size
        self._credential: Any = None
        self._client: ServiceBusClient | None = None
        self._admin: ServiceBusAdministrationClient | None = None
        self._senders: dict[str, ServiceBusSender] = {}
        self._receivers: dict[tuple[str, bool], ServiceBusReceiver] = {}
        # The SDK's handlers are not thread-safe: one send and one receive at a time on each.
        self._handlers_lock = threading.Lock()
        self._send_locks: dict[str, threading.Lock] = {}
        self._receive_locks: dict[tuple[str, bool], threading.Lock] = {}
        # Which receiver locked each message: only that receiver's link can settle it.
        self._receiver_of: weakref.WeakKeyDictionary[Any, ServiceBusReceiver] = weakref.WeakKeyDictionary()

    # --- SDK clients, created on first use

    def _azure_credential(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential

    def _default_client(self) -> ServiceBusClient:
        connection_string = self._settings.service_bus_connection_string
        if connection_string is not None:
            return ServiceBusClient.from_connection_string(connection_string.get_secret_value())
        assert self._settings.service_bus_namespace is not None
        return ServiceBusClient(
            fully_qualified_namespace=self._settings.service_bus_namespace,
            credential=self._azure_credential(),
        )

    def _default_admin(self) -> ServiceBusAdministrationClient:
        connection_string = self._settings.service_bus_connection_string
        if connection_string is not None:
            return ServiceBusAdministrationClient.from_connection_string(connection_string.get_secret_value())
        assert self._settings.service_bus_namespace is not None
        return ServiceBusAdministrationClient(
            fully_qualified_namespace=self._settings.service_bus_namespace,
            credential=self._azure_credential(),
        )

    def _client_locked(self) -> ServiceBusClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _sender(self, queue: str) -> tuple[ServiceBusSender, threading.Lock]:
        with self._handlers_lock:
            sender = self._senders.get(queue)
            if sender is None:
                sender = self._client_locked().get_queue_sender(queue_name=queue)
                self._senders[queue] = sender
                self._send_locks[queue] = threading.Lock()
            return sender, self._send_locks[queue]

    def _receiver(self, queue: str, dead_letter: bool) -> tuple[ServiceBusReceiver, threading.Lock]:
        key = (queue, dead_letter)
        with self._handlers_lock:
            receiver = self._receivers.get(key)
            if receiver is None:
                # prefetch 0: a prefetched message's lock would run down while it waits in our buffer.
                receiver = self._client_locked().get_queue_receiver(
                    queue_name=queue,
                    sub_queue=ServiceBusSubQueue.DEAD_LETTER if dead_letter else None,
                    receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                    prefetch_count=0,
                )
                self._receivers[key] = receiver
                self._receive_locks[key] = threading.Lock()
            return receiver, self._receive_locks[key]

    def _settling_receiver(self, message: ReceivedMessage) -> ServiceBusReceiver:
        receiver = self._receiver_of.get(message.raw) if message.raw is not None else None
        if receiver is None:
            raise MessageLockLost(f"message {message.message_id} was not received by this bus, or is settled")
        return receiver

    # --- the transactional outbox

    def stage(
        self,
        session: Session,
        queue: str,
        *,
        message_id: str,
        body: str,
        delay: float = 0.0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        scheduled_at = utcnow() + timedelta(seconds=delay) if delay > 0 else None
        session.add(
            OutboxMessage(
                queue=queue,
                message_id=message_id,
                body=body,
                properties=dict(properties) if properties else None,
                scheduled_at=scheduled_at,
            )
        )

    def stage_many(self, session: Session, messages: Sequence[Outgoing]) -> None:
        """Outbox rows for several messages, committed with the caller's transaction."""
        for message in messages:
            self.stage(
                session,
                message.queue,
                message_id=message.message_id,
                body=message.body,
                delay=message.delay,
                properties=message.properties,
            )

    def flush(self) -> int:
        """Publish every committed, unsent outbox row, a small batch per transaction; returns how many.
        Rows another relay has locked are skipped, not waited for: that relay publishes them."""
        published = 0
        while True:
            count = self._relay_batch()
            published += count
            if count == 0:
                return published

    def _relay_batch(self) -> int:
        failure: Exception | None = None
        with transaction(self._sessions) as session:
            # FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has no row locks and renders nothing here,
            # its BEGIN IMMEDIATE (shared.core.db) already keeps a second relay out until this one commits.
            rows = list(
                session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.sent_at.is_(None))
                    .order_by(OutboxMessage.id)
                    .limit(self._relay_batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            by_queue: dict[str, list[OutboxMessage]] = {}
            for row in rows:
                by_queue.setdefault(row.queue, []).append(row)
            published = 0
            for queue, queue_rows in by_queue.items():
                try:
                    self._publish(queue, queue_rows)
                except Exception as error:
                    # Commit what earlier queues accepted (it saves a resend), then fail the flush.
                    failure = error
                    break
                sent_at = utcnow()
                for row in queue_rows:
                    row.sent_at = sent_at
                published += len(queue_rows)
                logger.info(
                    "outbox rows published",
                    extra={"action": "outbox_publish", "queue": queue, "count": len(queue_rows)},
                )
        if failure is not None:
            raise failure
        return published

    def _publish(self, queue: str, rows: Sequence[OutboxMessage]) -> None:
        messages = [
            build_message(
                message_id=row.message_id,
                body=row.body,
                properties=row.properties,
                scheduled_at=row.scheduled_at,
            )
            for row in rows
        ]
        sender, lock = self._sender(queue)
        with _translated_errors(f"publish to {queue}"), lock:
            try:
                # One list is one AMQP transfer: accepted or refused as a whole.
                sender.send_messages(messages)
            except MessageSizeExceededError:
                for message in messages:
                    sender.send_messages(message)

    def purge_sent(self, older_than: timedelta = SENT_RETENTION) -> int:
        """Delete outbox rows sent more than `older_than` ago; returns how many."""
        with transaction(self._sessions) as session:
            result = session.execute(
                delete(OutboxMessage).where(
                    OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < utcnow() - older_than
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def relay_once(self) -> bool:
        """Publish what the outbox holds, and purge old sent rows hourly; True if anything was published.
        Callers flush right after their commit for low latency; the relay (a poller of the consume loop,
        shared/hosting/host.py) catches whatever a crashed process left. A failure is logged by the loop,
        which goes on: a relay that dies strands every later message."""
        try:
            published = self.flush()
            if time.monotonic() - self._last_purge >= PURGE_EVERY_SECONDS:
                purged = self.purge_sent()
                self._last_purge = time.monotonic()
                if purged:
                    logger.info("outbox purged", extra={"action": "outbox_purge", "count": purged})
        except TransientError as error:
            logger.warning("outbox relay: %s", error, extra={"action": "outbox_retry"})
            return False
        return published > 0

    # --- direct sends and the consumer side

    def send(
        self,
        queue: str,
        *,
        message_id: str,
        body: str,
        delay: float = 0.0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        scheduled_at = utcnow() + timedelta(seconds=delay) if delay > 0 else None
        message = build_message(message_id=message_id, body=body, properties=properties, scheduled_at=scheduled_at)
        sender, lock = self._sender(queue)
        with _translated_errors(f"send to {queue}"), lock:
            sender.send_messages(message)

    def receive(self, queue: str, *, max_wait: float, dead_letter: bool = False) -> ReceivedMessage | None:
        messages = self.receive_many(queue, max_messages=1, max_wait=max_wait, dead_letter=dead_letter)
        return messages[0] if messages else None

    def receive_many(
        self, queue: str, *, max_messages: int, max_wait: float, dead_letter: bool = False
    ) -> list[ReceivedMessage]:
        receiver, lock = self._receiver(queue, dead_letter)
        with _translated_errors(f"receive from {queue}"), lock:
            messages = receiver.receive_messages(
                max_message_count=max(1, max_messages), max_wait_time=max(max_wait, MIN_RECEIVE_WAIT_SECONDS)
            )
        received = []
        for raw in messages:
            self._receiver_of[raw] = receiver
            received.append(self._received(queue, raw))
        return received

    def _received(self, queue: str, raw: ServiceBusReceivedMessage) -> ReceivedMessage:
        now = time.time()
        properties = {str(_text(key)): _text(value) for key, value in (raw.application_properties or {}).items()}
        return ReceivedMessage(
            queue=queue,
            message_id=str(raw.message_id or ""),
            body=_body_text(raw.body),
            # The AMQP header counts earlier attempts (0 on the first delivery) and this SDK passes it
            # through; Service Bus itself, the .NET SDK and our port count deliveries from 1.
            delivery_count=(raw.delivery_count or 0) + 1,
            lock_token=str(raw.lock_token),
            locked_until=_epoch(raw.locked_until_utc, now + self._settings.lock_duration_seconds),
            enqueued_at=_epoch(raw.enqueued_time_utc, now),
            properties=properties,
            dead_letter_reason=raw.dead_letter_reason,
            dead_letter_description=raw.dead_letter_error_description,
            raw=raw,
        )

    def complete(self, message: ReceivedMessage) -> None:
        receiver = self._settling_receiver(message)
        with _translated_errors(f"complete {message.message_id}"):
            receiver.complete_message(message.raw)
        self._receiver_of.pop(message.raw, None)

    def complete_in(self, session: Session, messages: Sequence[ReceivedMessage]) -> bool:
        """Service Bus settles on its own link, not in a database transaction: complete after commit."""
        del session, messages
        return False

    def complete_many(self, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """Service Bus settles one message a call; returns those whose lock was lost."""
        lost = []
        for message in messages:
            try:
                self.complete(message)
            except MessageLockLost:
                lost.append(message)
        return lost

    def abandon(self, message: ReceivedMessage) -> None:
        receiver = self._settling_receiver(message)
        with _translated_errors(f"abandon {message.message_id}"):
            receiver.abandon_message(message.raw)
        self._receiver_of.pop(message.raw, None)

    def dead_letter(self, message: ReceivedMessage, *, reason: str, description: str) -> None:
        receiver = self._settling_receiver(message)
        with _translated_errors(f"dead-letter {message.message_id}"):
            receiver.dead_letter_message(message.raw, reason=reason, error_description=description)
        self._receiver_of.pop(message.raw, None)

    def renew_lock(self, message: ReceivedMessage) -> float:
        receiver = self._settling_receiver(message)
        with _translated_errors(f"renew lock of {message.message_id}"):
            expiry = receiver.renew_message_lock(message.raw)
        message.locked_until = expiry.timestamp()
        return message.locked_until

    # --- operations

    def queue_depths(self) -> dict[str, QueueDepth]:
        with self._handlers_lock:
            if self._admin is None:
                self._admin = self._admin_factory()
            admin = self._admin
        depths: dict[str, QueueDepth] = {}
        for queue in all_queues(self._settings):
            with _translated_errors(f"read depth of {queue}"):
                try:
                    runtime = admin.get_queue_runtime_properties(queue)
                except ResourceNotFoundError as error:
                    raise ConfigurationError(f"Service Bus queue {queue!r} does not exist") from error
            depths[queue] = QueueDepth(
                active=runtime.active_message_count or 0,
                scheduled=runtime.scheduled_message_count or 0,
                dead_letter=runtime.dead_letter_message_count or 0,
            )
        return depths

    def close(self) -> None:
        with self._handlers_lock:
            handlers: list[Any] = [
                *self._receivers.values(),
                *self._senders.values(),
                self._client,
                self._admin,
            ]
            self._receivers.clear()
            self._senders.clear()
            self._client = None
            self._admin = None
        for handler in handlers:
            if handler is None:
                continue
            try:
                handler.close()
            except Exception:
                logger.warning("closing a Service Bus handler failed", exc_info=True, extra={"action": "bus_close"})
        if self._credential is not None and hasattr(self._credential, "close"):
            self._credential.close()
            self._credential = None
