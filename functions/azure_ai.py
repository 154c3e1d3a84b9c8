"""The azure-ai-jobs function: the Service Bus trigger that runs the steps whose queue is azure-ai-jobs
(TRANSLATE and SUMMARIZE, through the text model) with the one step handler
(shared/worker/step_handler.py), as the local host's step consumer does."""

from __future__ import annotations

import logging
import time

import azure.functions as func

from shared.core.config import get_settings
from shared.core.errors import TransientError
from shared.runtime import Runtime, process_runtime
from shared.runtime.loop import DeadLetter
from shared.worker.step_handler import StepHandler, queue_processors, worker_id_of

log = logging.getLogger(__name__)

bp = func.Blueprint()

BUSY_MARGIN_SECONDS = 2.0


def handle_step_message(runtime: Runtime, body: str) -> None:
    """Run one step of this queue with the step handler every consumer uses (shared/worker/step_handler.py),
    and settle as the Functions host can: return → complete; an exception → abandon (delivered again,
    dead-lettered at the max delivery count). A malformed message or a step of another queue raises
    ValueError. The host cannot leave a message locked as the loop does for a step another live worker
    holds ("busy"): it keeps renewing this message's lock while we wait once for that worker's lease, then
    leaves it to redelivery (TransientError)."""
    message = StepHandler.message_of(body)
    if isinstance(message, DeadLetter):
        raise ValueError(f"malformed step message: {message.description}")
    queue = runtime.settings.azure_ai_queue
    handler = StepHandler(runtime, queue_processors(runtime.settings, queue), worker_id=worker_id_of("azure-ai"))
    settlement = handler.run(message, queue=queue)
    if settlement == "leave":
        log.info(
            "step held by another worker; waiting for its lease",
            extra={"action": "step_busy", "job_id": str(message.job_id), "step_type": message.step_type},
        )
        time.sleep(runtime.settings.lock_duration_seconds + BUSY_MARGIN_SECONDS)
        settlement = handler.run(message, queue=queue)
    if isinstance(settlement, DeadLetter):
        raise ValueError(settlement.description)
    if settlement == "leave":
        raise TransientError(f"{message.step_type} of job {message.job_id} is still held by another worker")
    if settlement == "abandon":
        raise TransientError(f"{message.step_type} of job {message.job_id} was handed back")


@bp.function_name("azure_ai")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=get_settings().azure_ai_queue,
    connection="SERVICE_BUS_CONNECTION_STRING",
)
def azure_ai_trigger(message: func.ServiceBusMessage) -> None:
    """Service Bus trigger on azure-ai-jobs. An exception abandons the message, so the host delivers it
    again and dead-letters it at the queue's max delivery count."""
    handle_step_message(process_runtime(), message.get_body().decode("utf-8"))
