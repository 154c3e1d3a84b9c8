"""BaseWorker: the loop every long-lived worker runs.

Receive a message under peek-lock → claim its step atomically → process while a background thread
renews the step lease and the message lock → write the result → complete the step and emit the job
event in one transaction → settle the message. SIGTERM/SIGINT stop the loop after the current message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from abc import ABC, abstractmethod
from types import FrameType
from typing import Any, ClassVar

from pydantic import ValidationError

from shared import metrics
from shared.bus import ReceivedMessage, settle_with_commit
from shared.config import Settings
from shared.errors import MessageLockLost
from shared.health import start_health_server
from shared.messages import StepMessage
from shared.runtime import Runtime
from shared.steps import Outcome, StepContext, run_step
from shared.tracing import configure_tracing, traceparent_of

log = logging.getLogger(__name__)


class BaseWorker(ABC):
    """Subclasses name the step types they handle and implement `process`."""

    step_types: ClassVar[tuple[str, ...]]
    receive_wait_seconds: ClassVar[float] = 1.0

    def __init__(self, settings: Settings, *, runtime: Runtime | None = None, worker_id: str | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or Runtime(settings)
        self.worker_id = worker_id or f"{type(self).__name__.lower()}-{socket.gethostname()}-{os.getpid()}"
        queues = {settings.worker_queues[step_type] for step_type in self.step_types}
        if len(queues) != 1:
            raise ValueError(f"{type(self).__name__} handles step types of several queues: {sorted(queues)}")
        self.queue = queues.pop()
        self.stopping = threading.Event()
        self.grace_over = threading.Event()
        """Set shutdown_grace_seconds after SIGTERM: the current step is handed back at its next boundary."""
        self.processed = 0

    @abstractmethod
    def process(self, step: StepContext) -> dict[str, Any]:
        """Do the step's work and return its JSON result (written to results/{job_id}/{step}.json).
        Raise PermanentError for input that can never succeed; anything else is retried."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Load models before taking messages, so a broken setup fails at start, not mid-job."""

    # --- the loop

    def run(self) -> int:
        """Consume until asked to stop; returns the process exit code."""
        self._install_signal_handlers()
        configure_tracing(self.settings, service_name=f"speechflow-{type(self).__name__.lower()}")
        # Probes answer while the model loads: the startup probe waits for /health, not for warm_up.
        health = start_health_server(self.runtime)
        self.warm_up()
        log.info("worker started", extra={"action": "worker_started", "queue": self.queue, "worker": self.worker_id})
        try:
            while not self.stopping.is_set():
                self.poll_once()
        finally:
            if health is not None:
                health.stop()
            self.runtime.close()
            log.info("worker stopped", extra={"action": "worker_stopped", "processed": self.processed})
        return 0

    def poll_once(self) -> bool:
        """Receive and handle at most one message; True if there was one."""
        received = self.runtime.bus.receive(self.queue, max_wait=self.receive_wait_seconds)
        if received is None:
            return False
        self.handle(received)
        return True

    def handle(self, received: ReceivedMessage) -> Outcome | None:
        """Run the message's step and settle the message; returns what happened to the step."""
        bus = self.runtime.bus
        try:
            message = StepMessage.model_validate_json(received.body)
        except ValidationError as error:
            bus.dead_letter(received, reason="InvalidMessage", description=str(error)[:1000])
            metrics.record_dead_letter(self.queue, "InvalidMessage")
            return None
        if message.step_type not in self.step_types:
            bus.dead_letter(
                received,
                reason="UnexpectedStepType",
                description=f"{type(self).__name__} does not handle {message.step_type}",
            )
            metrics.record_dead_letter(self.queue, "UnexpectedStepType")
            return None
        if message.traceparent is None:
            # A producer that put the trace context only in the application properties.
            traced = traceparent_of(None, received.properties)
            message = message.model_copy(update={"traceparent": traced}) if traced else message
        settled = threading.Event()
        outcome = run_step(
            self.runtime,
            message,
            self.process,
            worker_id=self.worker_id,
            renew_message_lock=lambda: bus.renew_lock(received),
            shutdown_requested=self.grace_over.is_set,
            settle_in=lambda session: settle_with_commit(bus, session, [received], settled.set),
        )
        if outcome == "busy":
            # Another worker holds a live lease. Leave the message locked: it comes back when the lock
            # expires, by which time that lease has been renewed (alive) or has expired (dead).
            return outcome
        if outcome == "released":
            # Shutting down mid-step: the step is pending again; deliver the message again now.
            with contextlib.suppress(MessageLockLost):
                bus.abandon(received)
            return outcome
        if not settled.is_set():
            try:
                bus.complete(received)
            except MessageLockLost:
                # The step's state is committed; a redelivery finds it finished and is acknowledged.
                log.warning("lock lost before completing", extra={"action": "complete_lock_lost"})
        if outcome in ("completed", "failed"):
            self.processed += 1
        return outcome

    def request_stop(self) -> None:
        """Take no more messages; let the current one finish within the grace period, then hand it back."""
        self.stopping.set()
        timer = threading.Timer(self.settings.shutdown_grace_seconds, self.grace_over.set)
        timer.daemon = True
        timer.start()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            if self.stopping.is_set():
                return
            log.info(
                "stopping after the current message (grace %.0f s)",
                self.settings.shutdown_grace_seconds,
                extra={"action": "shutdown", "signal": signum},
            )
            self.request_stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
