"""The runner of every registered component: a long-lived worker is the step consumer
(shared.worker.step_handler) over its component's queue, with models loaded before it takes messages
and probes on HEALTH_PORT. `python -m gpu_worker <component>` and the local host both run
`worker_for(settings, component)`.

Receive a message under peek-lock → claim its step atomically → process while the step lease and the
message lock are renewed → write the result → complete the step and emit the job event in one
transaction that also settles the message. SIGTERM/SIGINT stop the loop after the current message.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from shared.core.config import Settings
from shared.domain.messages import StepMessage
from shared.domain.registry import registry, spec_of, step_queues
from shared.runtime import Runtime
from shared.runtime.loop import Consumer, Shutdown
from shared.steps.context import StepContext
from shared.steps.runner import Outcome
from shared.worker.step_handler import (
    Processor,
    queue_processors,
    queue_warm_idle,
    queue_warm_up,
    serve_steps,
    step_consumer,
    worker_id_of,
)


class BaseWorker(ABC):
    """Subclasses name the step types they handle and implement `process`."""

    step_types: ClassVar[tuple[str, ...]]
    receive_wait_seconds: ClassVar[float] = 1.0

    def __init__(self, settings: Settings, *, runtime: Runtime | None = None, worker_id: str | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or Runtime(settings)
        self.component = spec_of(self.step_types[0]).component
        self.worker_id = worker_id or worker_id_of(self.component)
        queues = {step_queues(settings)[step_type] for step_type in self.step_types}
        if len(queues) != 1:
            raise ValueError(f"{type(self).__name__} handles step types of several queues: {sorted(queues)}")
        self.queue = queues.pop()
        self.shutdown = Shutdown(settings.shutdown_grace_seconds)
        self._routed_here = queue_processors(settings, self.queue)
        self.processed = 0
        self.consumer: Consumer = step_consumer(
            self.runtime,
            self.queue,
            lambda step_type: self.processor_for(step_type),  # noqa: PLW0108 - looked up per message: tests replace it
            worker_id=self.worker_id,
            receive_wait=self.receive_wait_seconds,
            shutdown=self.shutdown,
            on_outcome=self.finished,
        )

    @abstractmethod
    def process(self, step: StepContext) -> dict[str, Any]:
        """Do the step's work and return its JSON result (written to results/{job_id}/{step}.json).
        Raise PermanentError for input that can never succeed; anything else is retried."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Load models before taking messages, so a broken setup fails at start, not mid-job."""

    def processor_for(self, step_type: str) -> Processor | None:
        """`process` for this worker's step types and for those the step registry routes to its queue
        (looked up per message, so it can be replaced)."""
        if step_type in self.step_types or self._routed_here(step_type) is not None:
            return self.process
        return None

    def finished(self, message: StepMessage, outcome: Outcome) -> None:
        """Called after each step message this worker ran; counts the steps it finished."""
        del message
        if outcome in ("completed", "failed"):
            self.processed += 1

    @property
    def stopping(self) -> threading.Event:
        return self.shutdown.stopping

    @property
    def grace_over(self) -> threading.Event:
        """Set shutdown_grace_seconds after SIGTERM: the current step is handed back at its next boundary."""
        return self.shutdown.grace_over

    def run(self) -> int:
        """Consume until asked to stop; returns the process exit code."""
        return serve_steps(
            self.consumer,
            service_name=f"speechflow-{self.component}",
            warm_up=self.warm_up,
            warm_idle=queue_warm_idle(self.settings, self.queue),
            probes=True,
        )

    def poll_once(self) -> bool:
        """Receive and handle at most one message; True if there was one."""
        return self.consumer.poll_once()

    def request_stop(self) -> None:
        """Take no more messages; let the current one finish within the grace period, then hand it back."""
        self.shutdown.request()


class ComponentWorker(BaseWorker):
    """The worker of one registered component: every step whose messages arrive on its queue, its own
    and those routed to it, with the registry's processors, warmed up before it takes messages."""

    def warm_up(self) -> None:
        queue_warm_up(self.settings, self.queue)()

    def processor_for(self, step_type: str) -> Processor | None:
        return queue_processors(self.settings, self.queue)(step_type)

    def process(self, step: StepContext) -> dict[str, Any]:
        processor = self.processor_for(step.step_type)
        assert processor is not None, f"{self.queue} does not run {step.step_type}"
        return processor(step)


def worker_for(settings: Settings, component: str, *, runtime: Runtime | None = None) -> BaseWorker:
    """The worker of a registered component (`lid`, `whisper`, `diarize`, …)."""
    steps = tuple(spec.name for spec in registry().values() if spec.component == component)
    if not steps:
        raise ValueError(f"no step of the registry runs on a {component!r} worker")
    worker_class = type(f"{component.title().replace('-', '')}Worker", (ComponentWorker,), {"step_types": steps})
    return worker_class(settings, runtime=runtime)
