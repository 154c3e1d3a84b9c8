"""The SQL queue: the MessageBus over the job database (the embedded default on SQLite, self-hosting on
PostgreSQL), with Azure Service Bus semantics.

One row of `queue_messages` is one message. A receive locks the next deliverable row with a single
conditional UPDATE (`FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite every transaction is BEGIN
IMMEDIATE, so writers serialise); settling is another conditional UPDATE that only succeeds while the
lock token is ours and unexpired. Because the table is in the same database as the jobs, `stage()`
writes a message in the caller's transaction: the queue is its own transactional outbox.

Waiting receivers sleep rather than poll the database: a committed send wakes them, in this process
and in the others sharing the database (LISTEN/NOTIFY on PostgreSQL, UNIX datagram sockets beside a
SQLite file) — see shared/bus/wakeup.py. Where neither is available (an in-memory database),
receivers poll with a short adaptive sleep.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, case, delete, func, or_, update
from sqlalchemy import select as sql_select

from shared.bus.port import Outgoing, QueueDepth, ReceivedMessage
from shared.bus.sql_dialects import (
    ACTIVE,
    DEAD,
    DONE,
    MAX_DELIVERY_REASON,
    claim_statement,
    insert_many_unless_present,
    insert_unless_present,
    messages_table,
)
from shared.bus.wakeup import WakeUps, wake_key
from shared.core.errors import MessageLockLost
from shared.domain.registry import all_queues

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from shared.core.config import Settings

log = logging.getLogger(__name__)

_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.1
_PURGE_BATCH = 500

_table = messages_table
_c = _table.c


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqlQueue:
    """MessageBus over the `queue_messages` table; see the module docstring."""

    shares_database = True

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._lock_ms = max(1, round(settings.lock_duration_seconds * 1000))
        self._max_delivery_count = settings.max_delivery_count
        self._duplicate_window_ms = round(settings.duplicate_detection_seconds * 1000)
        self._configured_queues = list(all_queues(settings))
        self._purge_interval_s = min(60.0, max(1.0, settings.duplicate_detection_seconds / 2))
        self._last_purge: dict[str, float] = {}

        self._wakeups = WakeUps(engine)

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
        """Write a message inside the caller's transaction: it is sent if and only if that commits."""
        accepted = self._insert(
            session.connection(),
            queue,
            message_id=message_id,
            body=body,
            delay=delay,
            properties=properties,
        )
        if accepted:
            self._wakeups.after_commit(session, queue)

    def stage_many(self, session: Session, messages: Sequence[Outgoing]) -> None:
        """Stage several messages with one INSERT; any whose id is taken goes through `stage`, which
        knows about the duplicate detection window."""
        if not messages:
            return
        if len(messages) == 1:
            (only,) = messages
            self.stage(
                session,
                only.queue,
                message_id=only.message_id,
                body=only.body,
                delay=only.delay,
                properties=only.properties,
            )
            return
        now = now_ms()
        rows = [
            {
                "queue": m.queue,
                "message_id": m.message_id,
                "body": m.body,
                "properties": dict(m.properties) if m.properties else None,
                "state": ACTIVE,
                "enqueued_ms": now,
                "visible_ms": now + max(0, round(m.delay * 1000)),
                "delivery_count": 0,
            }
            for m in messages
        ]
        connection = session.connection()
        statement = insert_many_unless_present(rows, postgres=self._postgres)
        inserted = {(row.queue, row.message_id) for row in connection.execute(statement)}
        for queue in {queue for queue, _ in inserted}:
            self._wakeups.after_commit(session, queue)
        for m in messages:
            if (m.queue, m.message_id) not in inserted:
                self.stage(
                    session, m.queue, message_id=m.message_id, body=m.body, delay=m.delay, properties=m.properties
                )

    def send(
        self,
        queue: str,
        *,
        message_id: str,
        body: str,
        delay: float = 0.0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Send one message now in its own transaction; a duplicate message_id is accepted and dropped."""
        with self._engine.begin() as connection:
            inserted = self._insert(
                connection, queue, message_id=message_id, body=body, delay=delay, properties=properties
            )
        if inserted:
            self._wakeups.announce([queue])

    def flush(self) -> int:
        """Nothing to relay: the queue table is the outbox, so a committed message is already sent."""
        return 0

    def _insert(
        self,
        executor: Connection,
        queue: str,
        *,
        message_id: str,
        body: str,
        delay: float,
        properties: dict[str, Any] | None,
    ) -> bool:
        """Insert unless the message_id is a duplicate; returns whether the message was accepted."""
        now = now_ms()
        values = {
            "queue": queue,
            "message_id": message_id,
            "body": body,
            "properties": dict(properties) if properties else None,
            "state": ACTIVE,
            "enqueued_ms": now,
            "visible_ms": now + max(0, round(delay * 1000)),
            "delivery_count": 0,
        }
        if insert_unless_present(executor, values, postgres=self._postgres):
            return True
        # (queue, message_id) is taken. A completed message older than the duplicate detection window no
        # longer counts: forget it and try once more. Active and dead-lettered messages always count.
        expired = executor.execute(
            delete(_table).where(
                _c.queue == queue,
                _c.message_id == message_id,
                _c.state == DONE,
                _c.settled_ms < now - self._duplicate_window_ms,
            )
        )
        if expired.rowcount and insert_unless_present(executor, values, postgres=self._postgres):
            return True
        log.debug(
            "duplicate message dropped",
            extra={"action": "queue.duplicate", "queue": queue, "message_id": message_id},
        )
        return False

    # --- receiving

    def receive(self, queue: str, *, max_wait: float, dead_letter: bool = False) -> ReceivedMessage | None:
        """Lock and return the next deliverable message, waiting up to max_wait seconds for one."""
        messages = self.receive_many(queue, max_messages=1, max_wait=max_wait, dead_letter=dead_letter)
        return messages[0] if messages else None

    def receive_many(
        self, queue: str, *, max_messages: int, max_wait: float, dead_letter: bool = False
    ) -> list[ReceivedMessage]:
        """Lock up to max_messages deliverable messages in one statement, waiting up to max_wait
        seconds for the first."""
        deadline = time.monotonic() + max(0.0, max_wait)
        key = wake_key(queue, dead_letter=dead_letter)
        listener = self._wakeups.listener()
        self._maybe_purge(queue)
        poll_s = _POLL_FIRST_S
        while True:
            seen = self._wakeups.generation(key)
            messages, next_due_ms = self._claim(queue, dead_letter=dead_letter, limit=max(1, max_messages))
            if messages:
                return messages
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._wakeups.closed:
                return []
            timeout = remaining
            if next_due_ms is not None:
                # +1 ms: a lock counts as expired only once `now` is strictly past it.
                timeout = min(timeout, max(0.0, (next_due_ms - now_ms() + 1) / 1000))
            if listener is not None and listener.healthy:
                timeout = min(timeout, listener.safety_seconds)
            else:
                timeout = min(timeout, poll_s)
                poll_s = min(poll_s * 2, _POLL_MAX_S)
            self._wakeups.wait(key, seen, timeout)

    def _claim(self, queue: str, *, dead_letter: bool, limit: int) -> tuple[list[ReceivedMessage], int | None]:
        """Lock the next deliverable messages; when there are none, say when the next one is due."""
        state = DEAD if dead_letter else ACTIVE
        dead_letter_key = wake_key(queue, dead_letter=True)
        messages: list[ReceivedMessage] = []
        next_due: int | None = None
        moved_to_dead_letter = False
        with self._settling() as connection:
            # `now` is taken once the transaction holds its locks (SQLite: BEGIN IMMEDIATE may wait).
            now = now_ms()
            while not messages:
                rows = connection.execute(
                    claim_statement(
                        queue,
                        state,
                        now,
                        limit,
                        postgres=self._postgres,
                        lock_ms=self._lock_ms,
                        max_delivery_count=self._max_delivery_count,
                        max_delivery_description=self._max_delivery_description(),
                    )
                ).all()
                if not rows:
                    next_due = connection.execute(
                        sql_select(
                            func.min(case((_c.visible_ms > now, _c.visible_ms), else_=_c.locked_until_ms))
                        ).where(_c.queue == queue, _c.state == state)
                    ).scalar()
                    break
                for row in sorted(rows, key=lambda r: r.id):
                    if row.state == state:
                        messages.append(self._received(queue, row))
                        continue
                    # Delivered max_delivery_count times already: it went to the dead-letter sub-queue
                    # instead (as on Service Bus); look for the next one.
                    moved_to_dead_letter = True
                    log.warning(
                        "message dead-lettered: max delivery count exceeded",
                        extra={"action": "queue.max_delivery", "queue": queue, "message_id": row.message_id},
                    )
            if moved_to_dead_letter:
                self._wakeups.notify(connection, [dead_letter_key])
        if moved_to_dead_letter:
            self._wakeups.announce([dead_letter_key])
        return messages, next_due

    @staticmethod
    def _received(queue: str, row: Any) -> ReceivedMessage:
        return ReceivedMessage(
            queue=queue,
            message_id=row.message_id,
            body=row.body,
            delivery_count=row.delivery_count,
            lock_token=row.lock_token,
            locked_until=row.locked_until_ms / 1000,
            enqueued_at=row.enqueued_ms / 1000,
            properties=dict(row.properties or {}),
            dead_letter_reason=row.dead_letter_reason,
            dead_letter_description=row.dead_letter_description,
            raw=row.id,
        )

    def _max_delivery_description(self) -> str:
        return f"Message could not be consumed after {self._max_delivery_count} delivery attempts."

    # --- settling

    def complete(self, message: ReceivedMessage) -> None:
        """Settle: the message is done (kept a while for duplicate detection). A dead-lettered message
        completed from the dead-letter sub-queue leaves it."""
        with self._settling() as connection:
            now = now_ms()
            result = connection.execute(
                update(_table)
                .where(*self._lock_held(message, now))
                .values(state=DONE, settled_ms=now, lock_token=None, locked_until_ms=None)
            )
        if not result.rowcount:
            raise self._lock_lost(message, "complete")

    def complete_in(self, session: Session, messages: Sequence[ReceivedMessage]) -> bool:
        """The queue is in the job database: settle in the caller's transaction, together with the
        state change the messages caused (no redelivery after a crash between the two)."""
        if not messages:
            return True
        now = now_ms()
        held = or_(*(and_(*self._lock_held(message, now)[:2]) for message in messages))
        session.connection().execute(
            update(_table)
            .where(held, _c.locked_until_ms >= now)
            .values(state=DONE, settled_ms=now, lock_token=None, locked_until_ms=None)
        )
        return True

    def complete_many(self, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """Complete several messages in one statement; returns those whose lock was lost."""
        if not messages:
            return []
        with self._settling() as connection:
            now = now_ms()
            held = or_(*(and_(*self._lock_held(message, now)[:2]) for message in messages))
            done = (
                connection.execute(
                    update(_table)
                    .where(held, _c.locked_until_ms >= now)
                    .values(state=DONE, settled_ms=now, lock_token=None, locked_until_ms=None)
                    .returning(_c.id)
                )
                .scalars()
                .all()
            )
        settled = set(done)
        return [message for message in messages if message.raw not in settled]

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock so the message is delivered again, or dead-lettered if that was its last try."""
        with self._settling() as connection:
            now = now_ms()
            exhausted = and_(_c.state == ACTIVE, _c.delivery_count >= self._max_delivery_count)
            row = connection.execute(
                update(_table)
                .where(*self._lock_held(message, now))
                .values(
                    state=case((exhausted, DEAD), else_=_c.state),
                    dead_letter_reason=case((exhausted, MAX_DELIVERY_REASON), else_=_c.dead_letter_reason),
                    dead_letter_description=case(
                        (exhausted, self._max_delivery_description()), else_=_c.dead_letter_description
                    ),
                    lock_token=None,
                    locked_until_ms=None,
                )
                .returning(_c.state)
            ).first()
            if row is None:
                raise self._lock_lost(message, "abandon")
            key = wake_key(message.queue, dead_letter=row.state == DEAD)
            self._wakeups.notify(connection, [key])
        self._wakeups.announce([key])

    def dead_letter(self, message: ReceivedMessage, *, reason: str, description: str) -> None:
        """Move the message to its queue's dead-letter sub-queue."""
        key = wake_key(message.queue, dead_letter=True)
        with self._settling() as connection:
            now = now_ms()
            result = connection.execute(
                update(_table)
                .where(*self._lock_held(message, now))
                .values(
                    state=DEAD,
                    dead_letter_reason=reason,
                    dead_letter_description=description,
                    lock_token=None,
                    locked_until_ms=None,
                )
            )
            if not result.rowcount:
                raise self._lock_lost(message, "dead_letter")
            self._wakeups.notify(connection, [key])
        self._wakeups.announce([key])

    def renew_lock(self, message: ReceivedMessage) -> float:
        """Extend the lock by the lock duration from now; returns the new expiry in epoch seconds."""
        with self._settling() as connection:
            now = now_ms()
            locked_until = now + self._lock_ms
            result = connection.execute(
                update(_table).where(*self._lock_held(message, now)).values(locked_until_ms=locked_until)
            )
        if not result.rowcount:
            raise self._lock_lost(message, "renew_lock")
        message.locked_until = locked_until / 1000
        return message.locked_until

    @contextlib.contextmanager
    def _settling(self) -> Iterator[Connection]:
        """A transaction that only moves locks and settles messages. On PostgreSQL it commits without
        waiting for the WAL flush: a crash of the database server can lose such a commit from the last
        moments before it, and the message is then delivered again, which at-least-once delivery allows
        anyway (a send is not one of these; it stays durable). That saves two disk flushes a message."""
        with self._engine.begin() as connection:
            if self._postgres:
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield connection

    @staticmethod
    def _lock_held(message: ReceivedMessage, now: int) -> list[Any]:
        """The row is still locked by this receive: same lock token, lock not yet expired."""
        if not isinstance(message.raw, int):
            raise MessageLockLost(f"message {message.message_id} was not received from a SQL queue")
        return [
            _c.id == message.raw,
            _c.lock_token == message.lock_token,
            _c.locked_until_ms >= now,
        ]

    @staticmethod
    def _lock_lost(message: ReceivedMessage, action: str) -> MessageLockLost:
        return MessageLockLost(
            f"{action}: the lock on message {message.message_id} in {message.queue} expired "
            "or was taken by another receiver"
        )

    # --- depths and housekeeping

    def queue_depths(self) -> dict[str, QueueDepth]:
        """Depth of every configured queue (and any other queue with messages), dead letters included."""
        now = now_ms()
        active = and_(_c.state == ACTIVE, _c.visible_ms <= now)
        scheduled = and_(_c.state == ACTIVE, _c.visible_ms > now)
        statement = (
            sql_select(
                _c.queue,
                func.sum(case((active, 1), else_=0)),
                func.sum(case((scheduled, 1), else_=0)),
                func.sum(case((_c.state == DEAD, 1), else_=0)),
            )
            .where(_c.state.in_([ACTIVE, DEAD]))
            .group_by(_c.queue)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(statement).all()
        empty = QueueDepth(active=0, scheduled=0, dead_letter=0)
        depths = dict.fromkeys(self._configured_queues, empty)
        for queue, n_active, n_scheduled, n_dead in rows:
            depths[queue] = QueueDepth(
                active=int(n_active or 0), scheduled=int(n_scheduled or 0), dead_letter=int(n_dead or 0)
            )
        return depths

    def _maybe_purge(self, queue: str) -> None:
        """Now and then, forget completed messages older than the duplicate detection window."""
        now = time.monotonic()
        if now - self._last_purge.get(queue, float("-inf")) < self._purge_interval_s:
            return
        self._last_purge[queue] = now
        expired = (
            sql_select(_c.id)
            .where(_c.queue == queue, _c.state == DONE, _c.settled_ms < now_ms() - self._duplicate_window_ms)
            .limit(_PURGE_BATCH)
        )
        with self._settling() as connection:
            connection.execute(delete(_table).where(_c.id.in_(expired.scalar_subquery())))

    def close(self) -> None:
        self._wakeups.close()
