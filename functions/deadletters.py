"""The dead-letter accounting's Service Bus triggers on Azure, one per dead-letter sub-queue: the handler is
shared.worker.deadletters', the same the local host's dead-letter consumer calls."""

from __future__ import annotations

import azure.functions as func

from shared.core.config import get_settings
from shared.domain.registry import all_queues, registry
from shared.runtime import process_runtime
from shared.worker.deadletters import handle_dead_letter

bp = func.Blueprint()


def _handle(queue: str, message: func.ServiceBusMessage) -> None:
    handle_dead_letter(
        process_runtime(),
        queue=queue,
        body=message.get_body().decode("utf-8", errors="replace"),
        reason=message.dead_letter_reason,
        description=message.dead_letter_error_description,
    )


_settings = get_settings()
_CONNECTION = "SERVICE_BUS_CONNECTION_STRING"


def _trigger_name(queue: str) -> str:
    """`deadletters_<name>`: the events queue, or the default queue name of the step registry's queue."""
    if queue == _settings.job_events_queue:
        return "deadletters_job_events"
    spec = next(spec for spec in registry().values() if spec.queue_name(_settings) == queue)
    return "deadletters_" + spec.queue.removesuffix("-jobs").replace("-", "_")


def _register(queue: str) -> None:
    """A Service Bus trigger on this queue's dead-letter sub-queue."""

    def dead_letters(message: func.ServiceBusMessage) -> None:
        _handle(queue, message)

    name = _trigger_name(queue)
    dead_letters.__name__ = dead_letters.__qualname__ = name
    trigger = bp.service_bus_queue_trigger(
        arg_name="message", queue_name=f"{queue}/$DeadLetterQueue", connection=_CONNECTION
    )
    bp.function_name(name)(trigger(dead_letters))


# One per queue of the configuration: job-events and every step queue of the registry.
for _queue in all_queues(_settings):
    _register(_queue)
