"""An in-memory MessageBus for unit tests: the Protocol of shared/bus/__init__.py with Service Bus
semantics — peek-lock with a lock that expires, delivery count and dead-lettering at the max delivery
count, complete / abandon / dead-letter / renew, scheduled delivery, duplicate detection on message_id,
and (unless told it cannot) settlement inside the caller's SQLAlchemy transaction: `complete_in`
completes the messages when that transaction commits, not if it rolls back.

It also records what happened to each message, for tests to assert on."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from shared.bus import Outgoing, QueueDepth, ReceivedMessage
from shared.core.errors import MessageLockLost
from shared.runtime import Runtime

MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"


@dataclass
class Stored:
    """One message as the bus holds it."""

    id: int
    queue: str
    message_id: str
    body: str
    properties: dict[str, Any]
    enqueued_at: float
    visible_at: float
    state: str = "active"
    """active, dead (in the dead-letter sub-queue) or done."""
    delivery_count: int = 0
    lock_token: str | None = None
    locked_until: float = 0.0
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    history: list[str] = field(default_factory=list)
    """What happened to it, in order: received, renewed, completed, completed_in_transaction,
    abandoned, dead_lettered."""


class InMemoryBus:
    """See the module docstring. `transactional=False` behaves like Service Bus, which cannot settle in
    a database transaction (complete_in returns False)."""

    def __init__(
        self,
        *,
        lock_duration: float = 60.0,
        max_delivery_count: int = 10,
        transactional: bool = True,
        queues: Sequence[str] = (),
    ) -> None:
        self.shares_database = transactional
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        self.transactional = transactional
        self.queues = list(queues)
        self.messages: list[Stored] = []
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        self.closed = False

    # --- introspection for tests

    def in_queue(self, queue: str, *, state: str = "active") -> list[Stored]:
        with self._changed:
            return [m for m in self.messages if m.queue == queue and m.state == state]

    def find(self, message_id: str) -> Stored:
        """The newest message sent with this id."""
        with self._changed:
            return [m for m in self.messages if m.message_id == message_id][-1]

    # --- sending

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
        outgoing = Outgoing(queue=queue, message_id=message_id, body=body, delay=delay, properties=properties)
        event.listen(session, "after_commit", lambda _session: self._send(outgoing), once=True)

    def stage_many(self, session: Session, messages: Sequence[Outgoing]) -> None:
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
        return 0

    def send(
        self,
        queue: str,
        *,
        message_id: str,
        body: str,
        delay: float = 0.0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self._send(Outgoing(queue=queue, message_id=message_id, body=body, delay=delay, properties=properties))

    def _send(self, outgoing: Outgoing) -> None:
        now = time.time()
        with self._changed:
            if any(m.queue == outgoing.queue and m.message_id == outgoing.message_id for m in self.messages):
                return  # duplicate detection: accepted and dropped
            self.messages.append(
                Stored(
                    id=next(self._ids),
                    queue=outgoing.queue,
                    message_id=outgoing.message_id,
                    body=outgoing.body,
                    properties=dict(outgoing.properties or {}),
                    enqueued_at=now,
                    visible_at=now + outgoing.delay,
                )
            )
            self._changed.notify_all()

    # --- receiving

    def receive(self, queue: str, *, max_wait: float, dead_letter: bool = False) -> ReceivedMessage | None:
        messages = self.receive_many(queue, max_messages=1, max_wait=max_wait, dead_letter=dead_letter)
        return messages[0] if messages else None

    def receive_many(
        self, queue: str, *, max_messages: int, max_wait: float, dead_letter: bool = False
    ) -> list[ReceivedMessage]:
        deadline = time.monotonic() + max_wait
        with self._changed:
            while True:
                taken = self._lock_next(queue, max_messages, state="dead" if dead_letter else "active")
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0 or self.closed:
                    return taken
                # Short waits: a lock or a scheduled delivery may come due without any notification.
                self._changed.wait(min(remaining, 0.01))

    def _lock_next(self, queue: str, limit: int, *, state: str) -> list[ReceivedMessage]:
        now = time.time()
        taken: list[ReceivedMessage] = []
        for stored in self.messages:
            if len(taken) >= limit:
                break
            if stored.queue != queue or stored.state != state or stored.visible_at > now:
                continue
            if stored.lock_token is not None and stored.locked_until >= now:
                continue
            if state == "active" and stored.delivery_count >= self.max_delivery_count:
                self._to_dead_letter(stored, MAX_DELIVERY_REASON, "max delivery count exceeded")
                continue
            stored.delivery_count += 1
            stored.lock_token = str(uuid.uuid4())
            stored.locked_until = now + self.lock_duration
            stored.history.append("received")
            taken.append(self._received(stored))
        return taken

    @staticmethod
    def _received(stored: Stored) -> ReceivedMessage:
        return ReceivedMessage(
            queue=stored.queue,
            message_id=stored.message_id,
            body=stored.body,
            delivery_count=stored.delivery_count,
            lock_token=stored.lock_token or "",
            locked_until=stored.locked_until,
            enqueued_at=stored.enqueued_at,
            properties=dict(stored.properties),
            dead_letter_reason=stored.dead_letter_reason,
            dead_letter_description=stored.dead_letter_description,
            raw=stored.id,
        )

    # --- settling

    def _held(self, message: ReceivedMessage, action: str) -> Stored:
        """The stored message, if this receive still holds its lock; MessageLockLost otherwise."""
        now = time.time()
        for stored in self.messages:
            if stored.id == message.raw:
                if stored.lock_token == message.lock_token and stored.locked_until >= now:
                    return stored
                break
        raise MessageLockLost(f"{action}: the lock on {message.message_id} expired or was taken")

    def complete(self, message: ReceivedMessage) -> None:
        with self._changed:
            self._done(self._held(message, "complete"), "completed")

    def complete_many(self, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        lost = []
        for message in messages:
            try:
                self.complete(message)
            except MessageLockLost:
                lost.append(message)
        return lost

    def complete_in(self, session: Session, messages: Sequence[ReceivedMessage]) -> bool:
        if not self.transactional:
            return False

        def on_commit(_session: Session) -> None:
            with self._changed:
                for message in messages:
                    # A message whose lock was lost is left to its redelivery, as the SQL queue does.
                    with contextlib.suppress(MessageLockLost):
                        self._done(self._held(message, "complete_in"), "completed_in_transaction")

        event.listen(session, "after_commit", on_commit, once=True)
        return True

    def _done(self, stored: Stored, how: str) -> None:
        stored.state = "done"
        stored.lock_token = None
        stored.history.append(how)

    def abandon(self, message: ReceivedMessage) -> None:
        with self._changed:
            stored = self._held(message, "abandon")
            stored.lock_token = None
            stored.history.append("abandoned")
            if stored.state == "active" and stored.delivery_count >= self.max_delivery_count:
                self._to_dead_letter(stored, MAX_DELIVERY_REASON, "max delivery count exceeded")
            self._changed.notify_all()

    def dead_letter(self, message: ReceivedMessage, *, reason: str, description: str) -> None:
        with self._changed:
            self._to_dead_letter(self._held(message, "dead_letter"), reason, description)
            self._changed.notify_all()

    def _to_dead_letter(self, stored: Stored, reason: str, description: str) -> None:
        stored.state = "dead"
        stored.lock_token = None
        stored.dead_letter_reason = reason
        stored.dead_letter_description = description
        stored.history.append("dead_lettered")

    def renew_lock(self, message: ReceivedMessage) -> float:
        with self._changed:
            stored = self._held(message, "renew_lock")
            stored.locked_until = time.time() + self.lock_duration
            stored.history.append("renewed")
            message.locked_until = stored.locked_until
            return stored.locked_until

    def queue_depths(self) -> dict[str, QueueDepth]:
        now = time.time()
        depths: dict[str, QueueDepth] = {}
        with self._changed:
            for queue in {*self.queues, *(m.queue for m in self.messages)}:
                mine = [m for m in self.messages if m.queue == queue]
                depths[queue] = QueueDepth(
                    active=sum(m.state == "active" and m.visible_at <= now for m in mine),
                    scheduled=sum(m.state == "active" and m.visible_at > now for m in mine),
                    dead_letter=sum(m.state == "dead" for m in mine),
                )
        return depths

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()


def runtime_with_bus(runtime: Runtime, bus: InMemoryBus) -> Runtime:
    """The runtime, with this bus in place of the one its settings name."""
    runtime.__dict__["bus"] = bus  # Runtime.bus is a cached_property: this is its cached value
    return runtime
