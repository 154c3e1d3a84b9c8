"""The step consumer: any step message, run through `run_step` with the processor its step type names.

Every registered component's worker and the local azure-ai consumer are this consumer over their queue;
they differ only in which processors they have (`processors(step_type)`), whether they load models
before taking messages (`warm_up`) and whether they answer probes. How each outcome of a step settles
its message:

- completed, failed, settled (obsolete message), lost (taken over): acknowledged — in the
  transaction that finishes the step where the bus can;
- busy (another live worker holds the step): left locked; it is delivered again once the lock lapses,
  by which time that worker's lease has been renewed (alive) or has expired (dead);
- released (handed back at shutdown): abandoned, so another worker takes it at once.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from shared.core.config import Settings
from shared.core.tracing import configure_tracing, traceparent_of
from shared.domain.messages import StepMessage
from shared.domain.registry import spec_of, steps_on_queue
from shared.runtime import Runtime
from shared.runtime.loop import Consumer, DeadLetter, Delivery, Settlement, Shutdown
from shared.steps.context import StepContext
from shared.steps.runner import Outcome, processor_for, run_step
from shared.worker.health import WARM_UPS, at_lowest_priority, start_health_server, warm_in_background

log = logging.getLogger(__name__)

Processor = Callable[[StepContext], dict[str, Any]]
"""Does a step's work and returns its JSON result; PermanentError for input that can never succeed."""

Processors = Callable[[str], Processor | None]
"""The processor of a step type, or None where this consumer does not run that step type."""

SETTLEMENTS: dict[Outcome, Settlement] = {
    "completed": "complete",
    "failed": "complete",
    "settled": "complete",
    "lost": "complete",
    "busy": "leave",
    "released": "abandon",
}


def worker_id_of(component: str) -> str:
    """The one worker id format, recorded on the steps a worker claims: `{component}-{host}-{pid}`."""
    return f"{component}-{socket.gethostname()}-{os.getpid()}"


class StepHandler:
    """The consumer's handler for step messages. `on_outcome` hears what happened to each step."""

    def __init__(
        self,
        runtime: Runtime,
        processors: Processors,
        *,
        worker_id: str,
        on_outcome: Callable[[StepMessage, Outcome], object] | None = None,
    ) -> None:
        self.runtime = runtime
        self.processors = processors
        self.worker_id = worker_id
        self.on_outcome = on_outcome

    @staticmethod
    def message_of(body: str) -> StepMessage | DeadLetter:
        """The step message in `body`, or the dead-lettering of a malformed one."""
        try:
            return StepMessage.model_validate_json(body)
        except ValidationError as error:
            return DeadLetter("InvalidMessage", str(error)[:1000])

    def __call__(self, delivery: Delivery) -> Settlement:
        message = self.message_of(delivery.body)
        if isinstance(message, DeadLetter):
            return message
        return self.run(
            message,
            queue=delivery.message.queue,
            properties=delivery.message.properties,
            shutdown_requested=delivery.shutdown.grace_over.is_set,
            settle_in=delivery.settle_in,
        )

    def run(
        self,
        message: StepMessage,
        *,
        queue: str,
        properties: dict[str, Any] | None = None,
        shutdown_requested: Callable[[], bool] = lambda: False,
        settle_in: Callable[[Session], object] | None = None,
    ) -> Settlement:
        """Run the message's step and say how to settle the message: the step handler of every consumer,
        the loop's (`__call__`) and the Functions host's (functions/azure_ai.py) alike."""
        processor = self.processors(message.step_type)
        if processor is None:
            return DeadLetter("UnexpectedStepType", f"{queue} does not run {message.step_type} steps")
        if message.traceparent is None:
            # A producer that put the trace context only in the application properties.
            traced = traceparent_of(None, properties)
            message = message.model_copy(update={"traceparent": traced}) if traced else message
        outcome = run_step(
            self.runtime,
            message,
            processor,
            worker_id=self.worker_id,
            # The consumer (or the Functions host) renews the message lock; run_step keeps the step's lease.
            renew_message_lock=None,
            shutdown_requested=shutdown_requested,
            settle_in=settle_in,
        )
        if self.on_outcome is not None:
            self.on_outcome(message, outcome)
        return SETTLEMENTS[outcome]


def step_consumer(
    runtime: Runtime,
    queue: str,
    processors: Processors,
    *,
    worker_id: str,
    concurrency: int = 1,
    receive_wait: float = 1.0,
    shutdown: Shutdown | None = None,
    on_outcome: Callable[[StepMessage, Outcome], object] | None = None,
) -> Consumer:
    """A consumer that runs the step messages of `queue`."""
    handler = StepHandler(runtime, processors, worker_id=worker_id, on_outcome=on_outcome)
    return Consumer(runtime, queue, handler, concurrency=concurrency, receive_wait=receive_wait, shutdown=shutdown)


def serve_steps(
    consumer: Consumer,
    *,
    service_name: str,
    warm_up: Callable[[], object] | None = None,
    warm_idle: Callable[[], object] | None = None,
    probes: bool = False,
) -> int:
    """A step consumer's process: tracing, the probe server (answering while models load: the startup
    probe waits for /health, not for warm_up), warm_up so a broken setup fails at start rather than
    mid-job, then consume until SIGTERM, while `warm_idle` (compiles a first job would otherwise pay
    for) runs beside it. Both run at the lowest CPU priority, so that on a shared machine they take only
    what the jobs leave (README, "Two commands"). /ready says which are still loading or warming. Returns
    the exit code."""

    runtime = consumer.runtime
    configure_tracing(runtime.settings, service_name=service_name)
    health = start_health_server(runtime) if probes else None
    component = service_name.removeprefix("speechflow-")
    try:
        if warm_up is not None:
            WARM_UPS.set(component, "loading")
            try:
                at_lowest_priority(warm_up)
            except Exception:
                WARM_UPS.set(component, "failed")
                raise
        if warm_idle is not None:
            warm_in_background(component, warm_idle)
        else:
            WARM_UPS.set(component, "ready")
        return consumer.run()
    finally:
        if health is not None:
            health.stop()
        runtime.close()


def queue_processors(settings: Settings, queue: str) -> Processors:
    """The step registry's processors for the steps whose messages arrive on `queue` (their own, or
    routed there); None for any other step type, which is then dead-lettered as unexpected."""

    mine = {spec.name for spec in steps_on_queue(settings, queue)}

    def lookup(step_type: str) -> Processor | None:
        processor = processor_for(step_type)
        return processor if processor is not None and spec_of(step_type).name in mine else None

    return lookup


def queue_warm_up(settings: Settings, queue: str) -> Callable[[], None]:
    """Loads what the processors of `queue`'s steps need, before the consumer takes messages."""

    def warm_up() -> None:
        for spec in steps_on_queue(settings, queue):
            if spec.warm_up is not None:
                spec.warm_up(settings)

    return warm_up


def queue_warm_idle(settings: Settings, queue: str) -> Callable[[], None] | None:
    """What the processors of `queue`'s steps may warm while the consumer already takes messages."""

    warmers = [spec.warm_idle for spec in steps_on_queue(settings, queue) if spec.warm_idle is not None]
    if not warmers:
        return None

    def warm_idle() -> None:
        for warm in warmers:
            warm(settings)

    return warm_idle
