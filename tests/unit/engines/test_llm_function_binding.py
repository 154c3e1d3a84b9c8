"""The azure-ai-jobs function is registered with the Functions app and bound to the seed's queue."""

from __future__ import annotations

from shared.core.config import Settings
from tests.unit.api.test_function_app import bindings_by_function


def test_azure_ai_trigger_reads_azure_ai_jobs_with_the_seed_connection_setting() -> None:
    bindings = bindings_by_function()["azure_ai"]
    trigger = next(b for b in bindings if b["type"] == "serviceBusTrigger")
    assert trigger["queueName"] == Settings().azure_ai_queue == "azure-ai-jobs"
    assert trigger["connection"] == "SERVICE_BUS_CONNECTION_STRING"
    assert trigger["direction"].name == "IN"
