"""The azure-ai-jobs function: runs the steps whose queue is azure-ai-jobs (TRANSLATE and SUMMARIZE,
through the text model) with the processors of the step registry (shared/steps). The local host runs
the same processors through its step consumer."""

from __future__ import annotations

import logging
import time

import azure.functions as func
from pydantic import ValidationError

from shared.core.config import get_settings
from shared.core.errors import TransientError
from shared.domain.messages import StepMessage
from shared.domain.registry import steps_on_queue
from shared.runtime import Runtime, process_runtime
from shared.steps.runner import processor_for, run_step
from shared.worker.step_handler import worker_id_of

log = logging.getLogger(__name__)

bp = func.Blueprint()

BUSY_MARGIN_SECONDS = 2.0


def handle_step_message(runtime: Runtime, body: str) -> None:
    """Run one step of this queue. A malformed message raises ValueError (dead-lettered); a step another
    live worker holds is waited for once (the Functions host keeps renewing this message's lock), then
    left to redelivery (TransientError)."""
    try:
        message = StepMessage.model_validate_json(body)
    except ValidationError as error:
        raise ValueError(f"malformed step message: {error.errors()[:1]}") from error
    mine = {spec.name for spec in steps_on_queue(runtime.settings, runtime.settings.azure_ai_queue)}
    processor = processor_for(message.step_type)
    if processor is None or message.step_type not in mine:
        raise ValueError(f"azure-ai-jobs does not run {message.step_type} steps")
    outcome = run_step(runtime, message, processor, worker_id=worker_id_of("azure-ai"))
    if outcome != "busy":
        return
    wait = runtime.settings.lock_duration_seconds + BUSY_MARGIN_SECONDS
    log.info(
        "step held by another worker; waiting for its lease",
        extra={"action": "step_busy", "job_id": str(message.job_id), "step_type": message.step_type},
    )
    time.sleep(wait)
    if run_step(runtime, message, processor, worker_id=worker_id_of("azure-ai")) == "busy":
        raise TransientError(f"{message.step_type} of job {message.job_id} is still held by another worker")


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
