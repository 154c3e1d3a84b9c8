"""The local host: a stand-in for `func start` plus the workers, on one machine.

`python -m shared.host` (what `make up` runs) migrates the database, then the supervisor
(shared.supervisor) starts each component in its own process and restarts any that dies. This
module says what each component runs: the API under uvicorn; the router and the dead-letter consumer
(the same handlers the Functions host's Service Bus triggers call, fed by the one consumer loop of
shared.consumer); a step consumer per step queue (azure-ai here, the LID and Whisper workers in
gpu_worker); the webhook dispatcher; the outbox relay when the bus is Service Bus; the dashboard.
`python -m shared.host run <component>` runs one of them in this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import Settings, environment_snapshot, settings_or_exit
from shared.consumer import BatchHandler, Consumer, Delivery, Settlement, Shutdown
from shared.logs import configure_logging
from shared.purge import run_retention
from shared.runtime import Runtime
from shared.supervisor import (
    Child,
    Supervisor,
    ensure_local_api_key,
    replica_names,
    stop_on_signals,
    up,
)

if TYPE_CHECKING:
    from shared.step_consumer import Processors

__all__ = [
    "RUNNERS",
    "BatchHandler",
    "Child",
    "Pump",
    "Supervisor",
    "components",
    "ensure_local_api_key",
    "main",
    "replica_names",
    "run_step_consumer",
    "step_runner",
    "stop_on_signals",
    "up",
]

Runner = Callable[[Settings], int]
"""Runs one component in this process until SIGTERM; returns the exit code."""


class Pump(Consumer):
    """A Functions-style handler, `handler(runtime, body)`, fed from the bus the way the Functions
    host's Service Bus trigger feeds it: it returns → complete; ValueError (malformed) → dead-letter
    at once; anything else → abandon (delivered again, dead-lettered at the max delivery count). With
    `batch_handler`, up to `batch_size` messages go to it in one call instead."""

    def __init__(
        self,
        runtime: Runtime,
        queue: str,
        handler: Callable[[Runtime, str], object],
        *,
        concurrency: int = 1,
        batch_handler: BatchHandler | None = None,
        batch_size: int = 32,
    ) -> None:
        if batch_handler is not None:
            super().__init__(
                runtime, queue, batch_handler=batch_handler, batch_size=batch_size, concurrency=concurrency
            )
            return

        def handle(delivery: Delivery) -> Settlement:
            handler(delivery.runtime, delivery.body)
            return "complete"

        super().__init__(runtime, queue, handle, concurrency=concurrency)


def run_router(settings: Settings) -> int:
    from functions.router import route_event, route_events

    return Pump(
        Runtime(settings),
        settings.job_events_queue,
        route_event,
        batch_handler=route_events,
        concurrency=settings.router_concurrency,
    ).run()


def run_step_consumer(
    settings: Settings,
    queue: str,
    processors: Processors | None = None,
    *,
    concurrency: int = 1,
    warm_up: Callable[[], object] | None = None,
    probes: bool = False,
) -> int:
    """Consume one step queue: each message's step runs with the processor its step type names — by
    default the step registry's processors of the steps on that queue, warmed up first."""
    from shared.step_consumer import queue_processors, queue_warm_idle, queue_warm_up, serve_steps, step_consumer

    runtime = Runtime(settings)
    consumer = step_consumer(
        runtime,
        queue,
        processors or queue_processors(settings, queue),
        worker_id=f"{queue}-{socket.gethostname()}-{os.getpid()}",
        concurrency=concurrency,
    )
    return serve_steps(
        consumer,
        service_name=f"speechflow-{queue}",
        warm_up=warm_up or queue_warm_up(settings, queue),
        warm_idle=queue_warm_idle(settings, queue),
        probes=probes,
    )


def step_runner(
    queue_of: Callable[[Settings], str],
    *,
    concurrency_of: Callable[[Settings], int] | None = None,
    probes: bool = False,
) -> Runner:
    """The component that consumes one step queue with the registry's processors; its queue and its
    thread count are read from the settings when it starts."""

    def run(settings: Settings) -> int:
        concurrency = concurrency_of(settings) if concurrency_of is not None else 1
        return run_step_consumer(settings, queue_of(settings), concurrency=concurrency, probes=probes)

    return run


run_azure_ai = step_runner(
    lambda settings: settings.azure_ai_queue,
    concurrency_of=lambda settings: settings.concurrency(settings.azure_ai_concurrency),
)


def _run_until_stopped(settings: Settings, loop: Callable[[Runtime, Shutdown], object]) -> int:
    """A background loop of its own process: its connections, and SIGTERM/SIGINT to stop it."""
    runtime = Runtime(settings)
    shutdown = Shutdown(settings.shutdown_grace_seconds)
    shutdown.on_signals()
    try:
        loop(runtime, shutdown)
    finally:
        runtime.close()
    return 0


def run_relay(settings: Settings) -> int:
    """Publish committed outbox rows to Service Bus (docs/RELIABILITY.md: a job is never lost)."""
    from shared.bus.servicebus import ServiceBusBus

    def relay(runtime: Runtime, shutdown: Shutdown) -> None:
        bus = runtime.bus
        if isinstance(bus, ServiceBusBus):
            bus.run_relay(shutdown.stopping, interval=0.2)

    return _run_until_stopped(settings, relay)


def run_webhooks(settings: Settings) -> int:
    """Deliver due webhooks (retries; the router tries each new one at once)."""
    from shared.webhooks import run_dispatcher

    return _run_until_stopped(settings, run_dispatcher)


def run_deadletters(settings: Settings) -> int:
    """Account for every dead-lettered message of every queue (functions.deadletters)."""
    from functions.deadletters import run_consumer

    return _run_until_stopped(settings, run_consumer)


DASHBOARD_PORT = 8501


def run_dashboard(settings: Settings) -> int:
    """The Streamlit ops dashboard on :8501, behind an operator sign-in. This process becomes Streamlit
    (exec), so that the supervisor's SIGTERM reaches it directly; it reads the same environment into its
    own Settings."""
    root = str(Path(__file__).resolve().parent.parent)
    environment = environment_snapshot()
    # `shared` must be importable from the dashboard script, wherever `make up` was run from.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environment.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "streamlit", "run", str(Path(root) / "dashboard" / "app.py")]
    # Bound as the API is (API_HOST, 127.0.0.1 by default), never on every interface (docs/SECURITY.md).
    argv += ["--server.address", settings.api_host, "--server.port", str(DASHBOARD_PORT), "--server.headless", "true"]
    argv += ["--browser.gatherUsageStats", "false"]
    os.execve(sys.executable, argv, environment)  # noqa: S606 - our own interpreter and module


def run_api(settings: Settings) -> int:
    import uvicorn

    from functions.api import create_app

    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None)
    return 0


def run_realtime(settings: Settings) -> int:
    """Live transcription over WebSockets (gpu_worker/realtime), its own Whisper model."""
    from gpu_worker.realtime.server import main as serve_live

    return serve_live(settings)


def run_worker(settings: Settings, kind: str) -> int:
    from gpu_worker.__main__ import main as worker_main

    return worker_main([kind], settings=settings)


def components(settings: Settings) -> list[str]:
    """Every consumer this code base has, for the configured bus: the fixed ones, and one per component of
    the step registry (shared/pipeline) — a worker, or the azure-ai consumer."""
    from shared.pipeline import components as step_components

    names = ["api", "router", "webhooks", "deadletters", "retention"]
    names += [name for name in step_components(settings) if name in RUNNERS or _has_worker(name)]
    if settings.uses_service_bus:
        names.append("relay")
    if importlib.util.find_spec("gpu_worker") is not None and importlib.util.find_spec("faster_whisper") is not None:
        names.append("realtime")
    if importlib.util.find_spec("streamlit") is not None:
        names.append("dashboard")
    return names


def _has_worker(component: str) -> bool:
    return importlib.util.find_spec("gpu_worker") is not None and component != "azure-ai"


def runner(name: str) -> Runner:
    """The runner of a component: a fixed one, or a registered step component's worker."""
    if name in RUNNERS:
        return RUNNERS[name]
    return lambda settings: run_worker(settings, name)


RUNNERS: dict[str, Runner] = {
    "api": run_api,
    "router": run_router,
    "azure-ai": run_azure_ai,
    "relay": run_relay,
    "dashboard": run_dashboard,
    "webhooks": run_webhooks,
    "deadletters": run_deadletters,
    "retention": run_retention,
    "realtime": run_realtime,
}


def main(argv: list[str] | None = None) -> int:
    from shared.pipeline import worker_components

    settings = settings_or_exit()
    known = sorted({*RUNNERS, *worker_components(settings)})
    parser = argparse.ArgumentParser(prog="python -m shared.host", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    up_parser = sub.add_parser("up", help="run the whole stack (the default)")
    up_parser.add_argument("--only", nargs="*", choices=known, help="run just these components")
    run_parser = sub.add_parser("run", help="run one component in this process")
    run_parser.add_argument("component", choices=known)
    args = parser.parse_args(argv)
    configure_logging(settings)
    if args.command == "run":
        return runner(args.component)(settings)
    return up(settings, getattr(args, "only", None) or components(settings))


if __name__ == "__main__":
    sys.exit(main())
