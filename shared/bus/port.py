"""The MessageBus port: what a queue adapter offers, the envelopes it carries, and helpers over any adapter."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event

from shared.core.errors import TransientError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


log = logging.getLogger(__name__)


@dataclass
class ReceivedMessage:
    """A message held under a peek-lock until it is settled."""

    queue: str
    message_id: str
    body: str
    delivery_count: int
    """1 on the first delivery."""
    lock_token: str
    locked_until: float
    """Epoch seconds."""
    enqueued_at: float
    properties: dict[str, Any] = field(default_factory=dict)
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    raw: Any = None
    """The SDK's own message object, for adapters that need it to settle."""


@dataclass(frozen=True)
class Outgoing:
    """A message to stage: where it goes and what it says."""

    queue: str
    message_id: str
    body: str
    delay: float = 0.0
    properties: dict[str, Any] | None = None


@dataclass(frozen=True)
class QueueDepth:
    active: int
    """Ready or locked, not yet settled."""
    scheduled: int
    dead_letter: int


class MessageBus(Protocol):
    shares_database: bool
    """True when messages live in the job database itself (the SQL queue): a message's receipt, the
    state change it causes and its settlement then all sit in one write-ahead log."""

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
        """Write a message inside the caller's transaction: it is sent if and only if that commits."""

    def stage_many(self, session: Session, messages: Sequence[Outgoing]) -> None:
        """`stage` for several messages at once (one statement where the adapter can)."""

    def flush(self) -> int:
        """Publish committed staged messages still unsent (the outbox relay); returns how many."""

    def send(
        self,
        queue: str,
        *,
        message_id: str,
        body: str,
        delay: float = 0.0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Send one message now, outside any transaction. A message_id seen within the duplicate
        detection window is accepted and dropped."""

    def receive(self, queue: str, *, max_wait: float, dead_letter: bool = False) -> ReceivedMessage | None:
        """Lock and return the next deliverable message, waiting up to max_wait seconds."""

    def receive_many(
        self, queue: str, *, max_messages: int, max_wait: float, dead_letter: bool = False
    ) -> list[ReceivedMessage]:
        """Lock up to max_messages deliverable messages at once, waiting up to max_wait for the first."""

    def complete_many(self, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """Complete several messages; returns those whose lock was lost (not raised)."""

    def complete_in(self, session: Session, messages: Sequence[ReceivedMessage]) -> bool:
        """Settle these messages inside the caller's transaction, so that they are completed if and
        only if it commits (a message whose lock was lost meanwhile is left to its redelivery). False
        where the bus cannot (Service Bus): complete them after the commit instead."""

    def complete(self, message: ReceivedMessage) -> None:
        """Settle: the message is done. Raises MessageLockLost if the lock is no longer ours."""

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock: the message is delivered again (dead-lettered at max delivery count)."""

    def dead_letter(self, message: ReceivedMessage, *, reason: str, description: str) -> None:
        """Move the message to its queue's dead-letter sub-queue."""

    def renew_lock(self, message: ReceivedMessage) -> float:
        """Extend the lock; returns the new expiry (epoch seconds). Raises MessageLockLost."""

    def queue_depths(self) -> dict[str, QueueDepth]:
        """Depth of every configured queue, dead letters included."""

    def close(self) -> None: ...


def publish_committed(bus: MessageBus) -> None:
    """After a commit: publish what it staged now rather than waiting for the relay. Best effort —
    the rows are committed, so if the bus is unreachable the relay publishes them later."""
    try:
        bus.flush()
    except TransientError as error:
        log.warning("publish deferred to the relay: %s", error, extra={"action": "publish_deferred"})


def settle_with_commit(
    bus: MessageBus, session: Session, messages: Sequence[ReceivedMessage], on_settled: Callable[[], object]
) -> None:
    """Settle `messages` in `session`'s transaction where the bus allows it; `on_settled` runs once
    that transaction has committed (not if it rolls back)."""
    if messages and bus.complete_in(session, messages):
        event.listen(session, "after_commit", lambda _session: on_settled(), once=True)
