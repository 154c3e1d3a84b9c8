"""The local host: a stand-in for `func start` plus the workers, on one machine.

`python -m shared.hosting` (what `make up` runs) migrates the database, then the supervisor
(shared.hosting.supervisor) starts each component in its own process and restarts any that dies. This
module says what each component runs: the API (uvicorn, `functions.api:create_app` by name); the router and the
dead-letter consumer (the same handlers the Functions host's Service Bus triggers call, fed by the one
consumer loop of shared.runtime.loop); a step consumer per step queue (azure-ai here, and the worker of
every other registered component, shared.worker.component); the webhook dispatcher; retention; the
outbox relay when the bus is Service Bus; the dashboard.
`python -m shared.hosting run <component>` runs one of them in this process.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from shared.core.config import Settings, environment_snapshot, settings_or_exit
from shared.core.logs import configure_logging
from shared.domain.registry import FUNCTION_COMPONENTS, component_of_queue, worker_components
from shared.domain.registry import components as step_components
from shared.hosting.supervisor import (
    Child,
    PortInUse,
    Supervisor,
    ensure_local_api_key,
    replica_names,
    stop_on_signals,
    up,
)
from shared.jobs.retention import run_retention
from shared.jobs.webhooks import run_dispatcher
from shared.runtime import Runtime
from shared.runtime.loop import BatchHandler, Consumer, Delivery, Settlement, Shutdown, serve
from shared.worker.component import worker_for
from shared.worker.deadletters import run_consumer
from shared.worker.router import route_event, route_events
from shared.worker.step_handler import (
    Processors,
    queue_processors,
    queue_warm_idle,
    queue_warm_up,
    serve_steps,
    step_consumer,
    worker_id_of,
)

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

if TYPE_CHECKING:
    from shared.bus.servicebus import ServiceBusBus

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
    runtime = Runtime(settings)
    consumer = step_consumer(
        runtime,
        queue,
        processors or queue_processors(settings, queue),
        worker_id=worker_id_of(component_of_queue(settings, queue)),
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
    from shared.bus.servicebus import ServiceBusBus  # lazy: the Azure SDK, only where the bus is Service Bus

    def relay(runtime: Runtime, shutdown: Shutdown) -> None:
        bus = runtime.bus
        if isinstance(bus, ServiceBusBus):
            serve([Relay(bus)], shutdown=shutdown)

    return _run_until_stopped(settings, relay)


class Relay:
    """The outbox relay as one of the consume loop's pollers (shared.runtime.loop.serve)."""

    name = "relay"
    concurrency = 1
    idle_seconds = 0.2

    def __init__(self, bus: ServiceBusBus) -> None:
        self.bus = bus

    def poll_once(self) -> bool:
        return self.bus.relay_once()


def run_webhooks(settings: Settings) -> int:
    """Deliver due webhooks (retries; the router tries each new one at once)."""
    return _run_until_stopped(settings, run_dispatcher)


def run_deadletters(settings: Settings) -> int:
    """Account for every dead-lettered message of every queue (shared.worker.deadletters)."""
    return _run_until_stopped(settings, run_consumer)


def run_dashboard(settings: Settings) -> int:
    """The Streamlit ops dashboard on DASHBOARD_PORT (8501), behind an operator sign-in. This process
    becomes Streamlit (exec), so that the supervisor's SIGTERM reaches it directly; it reads the same
    environment into its own Settings."""
    root = str(Path(__file__).resolve().parents[2])
    environment = environment_snapshot()
    # `shared` must be importable from the dashboard script, wherever `make up` was run from.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environment.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "streamlit", "run", str(Path(root) / "dashboard" / "app.py")]
    # Bound as the API is (API_HOST, 127.0.0.1 by default), never on every interface (docs/SECURITY.md).
    argv += [
        "--server.address",
        settings.api_host,
        "--server.port",
        str(settings.dashboard_port),
        "--server.headless",
        "true",
    ]
    argv += ["--browser.gatherUsageStats", "false"]
    os.execve(sys.executable, argv, environment)  # noqa: S606 - our own interpreter and module


def run_api(settings: Settings) -> int:
    """The API under uvicorn, in this process. The API is a front, a layer above this one: it is started
    by name (uvicorn's `module:factory`), as a process manager starts a command, never imported here;
    `create_app()` reads the same environment into its own Settings."""
    import uvicorn  # only the API's process needs the server

    uvicorn.run(
        "functions.api:create_app", factory=True, host=settings.api_host, port=settings.api_port, log_config=None
    )
    return 0


def run_realtime(settings: Settings) -> int:
    """Live transcription over WebSockets (gpu_worker/realtime), its own Whisper model, in this process.
    A runner above this layer: started by name, as `run_api` starts the API, never imported here."""
    serve_live = importlib.import_module(LIVE_SERVER).main
    return int(serve_live(settings))


LIVE_SERVER = "gpu_worker.realtime.server"


def run_worker(settings: Settings, kind: str) -> int:
    return worker_for(settings, kind).run()


def components(settings: Settings) -> list[str]:
    """Every consumer this code base has, for the configured bus: the fixed ones, and one per component of
    the step registry (shared/steps) — a worker, or the azure-ai consumer."""
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
    return component not in FUNCTION_COMPONENTS


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
    settings = settings_or_exit()
    known = sorted({*RUNNERS, *worker_components(settings)})
    parser = argparse.ArgumentParser(prog="python -m shared.hosting", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    up_parser = sub.add_parser("up", help="run the whole stack (the default)")
    up_parser.add_argument("--only", nargs="*", choices=known, help="run just these components")
    run_parser = sub.add_parser("run", help="run one component in this process")
    run_parser.add_argument("component", choices=known)
    args = parser.parse_args(argv)
    configure_logging(settings)
    if args.command == "run":
        return runner(args.component)(settings)
    try:
        return up(settings, getattr(args, "only", None) or components(settings))
    except PortInUse as error:
        print(f"speechflow: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
