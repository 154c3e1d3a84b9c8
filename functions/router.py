"""The router's Service Bus trigger on job-events: the handler is shared.worker.router's, the same the
local host's router consumer calls."""

from __future__ import annotations

import azure.functions as func

from shared.core.config import get_settings
from shared.runtime import process_runtime
from shared.worker.router import route_event

bp = func.Blueprint()


@bp.function_name("router")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=get_settings().job_events_queue,
    connection="SERVICE_BUS_CONNECTION_STRING",
)
def router_trigger(message: func.ServiceBusMessage) -> None:
    """Service Bus trigger on job-events. An exception abandons the message, so the host delivers it
    again and dead-letters it at the queue's max delivery count."""
    route_event(process_runtime(), message.get_body().decode("utf-8"))
