"""The Functions app's registered functions and their bindings: what `func start` and Azure read."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import azure.functions as func

from shared.core.config import Settings
from shared.domain.registry import all_queues

REPO = Path(__file__).resolve().parents[3]


@cache
def bindings_by_function() -> dict[str, list[dict]]:
    """Indexed once: the app refuses to index its functions twice."""
    import function_app

    assert isinstance(function_app.app, func.AsgiFunctionApp)
    return {
        function.get_function_name(): [binding.get_dict_repr() for binding in function.get_bindings()]
        for function in function_app.app.get_functions()
    }


def test_http_function_serves_every_route_anonymously() -> None:
    http = bindings_by_function()["http_app_func"]
    trigger = next(b for b in http if b["type"] == "httpTrigger")
    assert trigger["authLevel"] == func.AuthLevel.ANONYMOUS
    assert trigger["route"] == "/{*route}"
    assert {"GET", "POST", "PUT", "DELETE"} <= {str(m.value) for m in trigger["methods"]}


def test_router_trigger_reads_job_events_with_the_seed_connection_setting() -> None:
    router = bindings_by_function()["router"]
    trigger = next(b for b in router if b["type"] == "serviceBusTrigger")
    assert trigger["queueName"] == Settings().job_events_queue == "job-events"
    assert trigger["connection"] == "SERVICE_BUS_CONNECTION_STRING"
    assert trigger["direction"].name == "IN"


def test_host_json_serves_routes_without_prefix() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""
    assert host["version"] == "2.0"


def test_webhook_dispatcher_runs_on_a_timer() -> None:
    (trigger,) = bindings_by_function()["webhooks"]
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == "*/10 * * * * *"


def test_every_dead_letter_sub_queue_has_a_consumer() -> None:
    functions = bindings_by_function()
    settings = Settings()
    names = {"deadletters_job_events", "deadletters_lid", "deadletters_whisper", "deadletters_azure_ai"}
    assert names <= set(functions), "the seed's queues keep their dead-letter functions' names"
    queues = [functions[name][0]["queueName"] for name in functions if name.startswith("deadletters_")]
    assert sorted(queues) == sorted(f"{queue}/$DeadLetterQueue" for queue in all_queues(settings))
    assert all(
        functions[name][0]["connection"] == "SERVICE_BUS_CONNECTION_STRING" for name in functions if "dead" in name
    )


def test_retention_runs_on_a_timer_every_five_minutes() -> None:
    (trigger,) = bindings_by_function()["retention"]
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == "0 */5 * * * *"
    assert Settings().purge_interval_seconds == 300, "the timer keeps PURGE_INTERVAL_SECONDS' default"
