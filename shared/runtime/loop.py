"""One consumer loop for every long-lived consumer: receive → hand to a handler → settle.

A `Consumer` receives one message or a batch from a queue (or its dead-letter sub-queue) under
peek-lock, keeps the locks renewed while its handler works, and settles each message as the handler
says: complete, abandon (delivered again, dead-lettered at the max delivery count), leave it locked
until its lock lapses, or dead-letter it. A handler that raises ValueError has been given a malformed
message: it is dead-lettered at once; any other exception abandons the message. A handler can settle
its message inside the transaction that records its effect (`Delivery.settle_in`), where the bus can
(MessageBus.complete_in); the consumer then leaves it alone.

`serve` runs consumers — and anything else shaped like one (a `Poller`, e.g. the webhook dispatcher)
— on their threads until SIGTERM/SIGINT: no further message is taken, the one in hand is finished
within the shutdown grace period, after which `Shutdown.grace_over` tells step handlers to hand their
step back. While the bus or the database is unreachable the loop backs off and tries again.
docs/RELIABILITY.md says what these rules guarantee.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Literal, Protocol

from shared.bus import MessageBus, ReceivedMessage, settle_with_commit
from shared.core.errors import MessageLockLost
from shared.runtime import metrics

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.runtime import Runtime

log = logging.getLogger(__name__)

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
"""While the bus or the database is unreachable: wait this long, doubling, before looking again."""


@dataclass(frozen=True)
class DeadLetter:
    """Settle by moving the message to its queue's dead-letter sub-queue, with the reason."""

    reason: str
    description: str


Settlement = Literal["complete", "abandon", "leave"] | DeadLetter
"""What to do with a handled message. "leave" keeps it locked until its lock lapses, then it is
delivered again (a step another live worker holds is looked at again after its lease is renewed or
has expired)."""


class Shutdown:
    """A process's stop request: `stopping` once asked (take no more messages), `grace_over` once the
    grace period has passed too (hand the message in hand back rather than finish it)."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.stopping = threading.Event()
        self.grace_over = threading.Event()

    def request(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        timer = threading.Timer(self.grace_seconds, self.grace_over.set)
        timer.daemon = True
        timer.start()

    def on_signals(self) -> None:
        """SIGTERM and SIGINT request the stop (only the main thread can install signal handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def request(signum: int, _frame: FrameType | None) -> None:
            if not self.stopping.is_set():
                log.info(
                    "stopping after the current message (grace %.0f s)",
                    self.grace_seconds,
                    extra={"action": "shutdown", "signal": signum},
                )
            self.request()

        signal.signal(signal.SIGTERM, request)
        signal.signal(signal.SIGINT, request)


@dataclass
class Delivery:
    """One received message as its handler sees it."""

    message: ReceivedMessage
    runtime: Runtime
    shutdown: Shutdown
    renewer: LockRenewer | None = field(default=None, repr=False)
    settled: bool = False
    """True once the message was settled in the handler's own transaction (settle_in, committed)."""

    @property
    def body(self) -> str:
        return self.message.body

    @property
    def shutting_down(self) -> bool:
        """The shutdown grace period is over: stop at the next boundary and hand the work back."""
        return self.shutdown.grace_over.is_set()

    def settle_in(self, session: Session) -> None:
        """Complete the message in `session`'s transaction, where the bus can: if and only if it commits."""
        settle_with_commit(self.runtime.bus, session, [self.message], self._on_settled)

    def _on_settled(self) -> None:
        self.settled = True
        if self.renewer is not None:
            self.renewer.release([self.message])


Handler = Callable[[Delivery], Settlement]
"""Handles one message and says how to settle it; raising ValueError dead-letters it, any other
exception abandons it (or leaves it, see Consumer's `on_failure`)."""


class BatchHandler(Protocol):
    """Handles the bodies of a batch; per body it returns a result or the exception that stopped it
    (ValueError: malformed). `settle_in(session, indexes)` settles those messages inside the
    handler's own transaction where the bus can."""

    def __call__(
        self, runtime: Runtime, bodies: list[str], *, settle_in: Callable[[Session, list[int]], object]
    ) -> Sequence[object]: ...


class LockRenewer:
    """Keeps the locks of the messages in hand while their handler works: each is renewed every third
    of the lock duration on a background thread, so a slow handler does not lose its message to
    another receiver (docs/RELIABILITY.md)."""

    def __init__(self, bus: MessageBus, messages: Sequence[ReceivedMessage], *, interval: float) -> None:
        self._bus = bus
        self._held = list(messages)
        self._guard = threading.Lock()
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def release(self, messages: Sequence[ReceivedMessage]) -> None:
        """These are settled: renew them no more."""
        with self._guard:
            self._held = [held for held in self._held if all(held is not message for message in messages)]

    def _holds(self, message: ReceivedMessage) -> bool:
        with self._guard:
            return any(held is message for held in self._held)

    def __enter__(self) -> LockRenewer:
        if self._held and self._interval > 0:
            self._thread = threading.Thread(target=self._run, name="lock-renewer", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._guard:
                held = list(self._held)
            for message in held:
                if self._stop.is_set():
                    return
                try:
                    self._bus.renew_lock(message)
                except MessageLockLost:
                    if self._holds(message):  # not settled just now by its handler's commit
                        log.warning(
                            "message lock lost while handling",
                            extra={"action": "lock_lost", "queue": message.queue, "message_id": message.message_id},
                        )
                    self.release([message])
                except Exception:
                    # The bus is unreachable for now: try again at the next turn.
                    log.warning("lock renewal failed", exc_info=True, extra={"action": "lock_renew_failed"})


class Poller(Protocol):
    """Anything `serve` can run: one round of work per `poll_once`."""

    name: str
    concurrency: int
    idle_seconds: float
    """How long to wait after a round that found nothing (0 where poll_once waits itself)."""

    def poll_once(self) -> bool:
        """Do one round of work; True if there was any."""
        ...


class Consumer:
    """Receive → handle → settle on one queue (see the module docstring). Give `handler` for one
    message at a time, or `batch_handler` for up to `batch_size` messages in one call."""

    idle_seconds = 0.0  # receive waits for a message itself

    def __init__(
        self,
        runtime: Runtime,
        queue: str,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        batch_size: int = 32,
        concurrency: int = 1,
        dead_letter: bool = False,
        receive_wait: float = 1.0,
        on_failure: Literal["abandon", "leave"] = "abandon",
        shutdown: Shutdown | None = None,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise TypeError("give a Consumer either a handler or a batch_handler")
        self.runtime = runtime
        self.queue = queue
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_size = max(1, batch_size) if batch_handler is not None else 1
        self.concurrency = max(1, concurrency)
        self.dead_letter = dead_letter
        self.receive_wait = receive_wait
        self.on_failure: Settlement = on_failure
        self.shutdown = shutdown or Shutdown(runtime.settings.shutdown_grace_seconds)
        self.name = f"{queue}/$DeadLetterQueue" if dead_letter else queue

    @property
    def stopping(self) -> threading.Event:
        return self.shutdown.stopping

    @property
    def grace_over(self) -> threading.Event:
        return self.shutdown.grace_over

    def request_stop(self) -> None:
        """Take no more messages; finish the one in hand within the grace period, then hand it back."""
        self.shutdown.request()

    def run(self) -> int:
        """Consume on `concurrency` threads until asked to stop; returns the process exit code."""
        try:
            return serve([self], shutdown=self.shutdown)
        finally:
            self.runtime.close()

    def poll_once(self, max_wait: float | None = None) -> bool:
        """Receive and handle one message (or one batch); True if there was any."""
        if self.stopping.is_set():
            return False
        wait = self.receive_wait if max_wait is None else max_wait
        bus = self.runtime.bus
        if self.batch_handler is None:
            message = bus.receive(self.queue, max_wait=wait, dead_letter=self.dead_letter)
            if message is None:
                return False
            self.handle(message)
            return True
        messages = bus.receive_many(
            self.queue, max_messages=self.batch_size, max_wait=wait, dead_letter=self.dead_letter
        )
        if not messages:
            return False
        self.handle_batch(self.batch_handler, messages)
        return True

    def handle(self, message: ReceivedMessage) -> Delivery:
        """Hand one received message to the handler and settle it as it says."""
        assert self.handler is not None
        delivery = Delivery(message=message, runtime=self.runtime, shutdown=self.shutdown)
        with self._renewing([message]) as renewer:
            delivery.renewer = renewer
            try:
                settlement = self.handler(delivery)
            except ValueError as error:
                settlement = DeadLetter("InvalidMessage", str(error)[:1000])
            except Exception:
                log.exception(
                    "handler failed; message %s", self.on_failure, extra={"action": "abandon", "queue": self.name}
                )
                settlement = self.on_failure
        if not delivery.settled:
            self._settle(message, settlement)
        return delivery

    def handle_batch(self, batch_handler: BatchHandler, messages: list[ReceivedMessage]) -> None:
        """One handler call for the batch; then each message settled as its result says."""
        settled: set[int] = set()
        with self._renewing(messages) as renewer:
            bus = self.runtime.bus

            def settle_in(session: Session, indexes: list[int]) -> None:
                chosen = [messages[index] for index in indexes]

                def on_settled() -> None:
                    settled.update(indexes)
                    renewer.release(chosen)

                settle_with_commit(bus, session, chosen, on_settled)

            results = batch_handler(self.runtime, [message.body for message in messages], settle_in=settle_in)
        done: list[ReceivedMessage] = []
        for index, (message, result) in enumerate(zip(messages, results, strict=True)):
            if index in settled:
                continue
            if isinstance(result, ValueError):
                self._settle(message, DeadLetter("InvalidMessage", str(result)[:1000]))
            elif isinstance(result, Exception):
                log.error(
                    "handler failed; message %s: %s",
                    self.on_failure,
                    result,
                    extra={"action": "abandon", "queue": self.name},
                )
                self._settle(message, self.on_failure)
            else:
                done.append(message)
        lost = self.runtime.bus.complete_many(done)
        if lost:
            log.warning("lock lost before completing", extra={"action": "complete_lock_lost", "count": len(lost)})

    def _renewing(self, messages: Sequence[ReceivedMessage]) -> LockRenewer:
        interval = self.runtime.settings.lock_duration_seconds / 3
        return LockRenewer(self.runtime.bus, messages, interval=max(0.05, interval))

    def _settle(self, message: ReceivedMessage, settlement: Settlement) -> None:
        bus = self.runtime.bus
        try:
            if settlement == "complete":
                bus.complete(message)
            elif settlement == "abandon":
                bus.abandon(message)
            elif isinstance(settlement, DeadLetter):
                bus.dead_letter(message, reason=settlement.reason, description=settlement.description)
                metrics.record_dead_letter(self.queue, settlement.reason)
                log.warning(
                    "message dead-lettered: %s",
                    settlement.reason,
                    extra={"action": "dead_letter", "queue": self.name, "message_id": message.message_id},
                )
        except MessageLockLost:
            # Whatever the handler committed stands; the redelivery finds it done and is acknowledged.
            log.warning(
                "lock lost before settling (%s)",
                settlement if isinstance(settlement, str) else "dead_letter",
                extra={"action": "complete_lock_lost", "queue": self.name},
            )


def serve(pollers: Sequence[Poller], *, shutdown: Shutdown) -> int:
    """Run each poller on its `concurrency` threads until the shutdown is requested (SIGTERM/SIGINT
    when called from the main thread); each thread finishes its current round first. Returns 0."""
    shutdown.on_signals()
    threads = [
        threading.Thread(target=_loop, args=(poller, shutdown), name=f"consumer-{poller.name}-{n}", daemon=True)
        for poller in pollers
        for n in range(max(1, poller.concurrency))
    ]
    for poller in pollers:
        log.info(
            "consumer started",
            extra={"action": "consumer_started", "queue": poller.name, "concurrency": poller.concurrency},
        )
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(timeout=0.5)
    log.info("consumer stopped", extra={"action": "consumer_stopped"})
    return 0


def _loop(poller: Poller, shutdown: Shutdown) -> None:
    backoff = BACKOFF_FIRST_SECONDS
    while not shutdown.stopping.is_set():
        try:
            moved = poller.poll_once()
        except Exception:
            log.exception("consumer error; backing off %.1fs", backoff, extra={"action": "consumer_error"})
            shutdown.stopping.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            continue
        backoff = BACKOFF_FIRST_SECONDS
        if not moved and poller.idle_seconds > 0:
            shutdown.stopping.wait(poller.idle_seconds)
