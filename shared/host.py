"""The local host: a stand-in for `func start` plus the workers, on one machine.

`python -m shared.host` (what `make up` runs) migrates the database, then starts each consumer in its
own process — the API under uvicorn, a pump per Service Bus-triggered function (router, azure-ai
steps) that feeds it messages from the configured bus, the outbox relay when the bus is Service Bus,
and every worker that exists — and restarts any that dies, as Kubernetes would. Ctrl-C or SIGTERM
stops them all cleanly. The pumps call the same handlers the Functions host calls.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from shared.bus import settle_with_commit
from shared.config import Settings, environment_snapshot, get_settings, local_api_key
from shared.errors import MessageLockLost
from shared.logs import configure_logging
from shared.runtime import Runtime

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("speechflow.host")


# --- pumps: the Functions host's Service Bus trigger, for the local stack


class Pump:
    """Receive → call the handler → complete; an exception abandons the message (redelivered, and
    dead-lettered at the max delivery count); a ValueError (malformed input) dead-letters at once."""

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
        self.runtime = runtime
        self.queue = queue
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        self.stopping = threading.Event()

    def run(self) -> int:
        """Handle messages on `concurrency` threads (like the Functions host's maxConcurrentCalls)
        until SIGTERM/SIGINT; each finishes its current message first."""
        _stop_on_signals(self.stopping)
        log.info("pump started", extra={"action": "pump_started", "queue": self.queue, "concurrency": self.concurrency})
        threads = [
            threading.Thread(target=self._loop, name=f"pump-{self.queue}-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.5)
        finally:
            self.runtime.close()
        return 0

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once(max_wait=1.0)
            except Exception:
                # The bus or the database is unreachable: back off, then try again.
                log.exception("pump error", extra={"action": "pump_error", "queue": self.queue})
                self.stopping.wait(1.0)

    def poll_once(self, *, max_wait: float) -> bool:
        if self.batch_handler is not None:
            return self._poll_batch(self.batch_handler, max_wait=max_wait)
        bus = self.runtime.bus
        message = bus.receive(self.queue, max_wait=max_wait)
        if message is None:
            return False
        try:
            self.handler(self.runtime, message.body)
        except ValueError as error:
            bus.dead_letter(message, reason="InvalidMessage", description=str(error)[:1000])
            return True
        except Exception:
            log.exception("handler failed; message abandoned", extra={"action": "abandon", "queue": self.queue})
            with contextlib.suppress(MessageLockLost):
                bus.abandon(message)
            return True
        try:
            bus.complete(message)
        except MessageLockLost:
            log.warning("lock lost before completing", extra={"action": "complete_lock_lost", "queue": self.queue})
        return True

    def _poll_batch(self, batch_handler: BatchHandler, *, max_wait: float) -> bool:
        """Like poll_once for up to batch_size messages: one receive, one handler call, one settle."""
        bus = self.runtime.bus
        messages = bus.receive_many(self.queue, max_messages=self.batch_size, max_wait=max_wait)
        if not messages:
            return False
        settled: set[int] = set()

        def settle_in(session: Session, indexes: list[int]) -> None:
            chosen = [messages[index] for index in indexes]
            settle_with_commit(bus, session, chosen, lambda: settled.update(indexes))

        results = batch_handler(self.runtime, [message.body for message in messages], settle_in=settle_in)
        done = []
        for index, (message, result) in enumerate(zip(messages, results, strict=True)):
            if index in settled:
                continue
            if isinstance(result, ValueError):
                bus.dead_letter(message, reason="InvalidMessage", description=str(result)[:1000])
            elif isinstance(result, Exception):
                log.error(
                    "handler failed; message abandoned: %s",
                    result,
                    extra={"action": "abandon", "queue": self.queue},
                )
                with contextlib.suppress(MessageLockLost):
                    bus.abandon(message)
            else:
                done.append(message)
        lost = bus.complete_many(done)
        if lost:
            log.warning("lock lost before completing", extra={"action": "complete_lock_lost", "count": len(lost)})
        return True


class BatchHandler(Protocol):
    """Handles the bodies of a batch; `settle_in(session, indexes)` settles those messages inside the
    handler's own transaction where the bus allows it."""

    def __call__(
        self, runtime: Runtime, bodies: list[str], *, settle_in: Callable[[Session, list[int]], object]
    ) -> Sequence[object]: ...


def _stop_on_signals(stopping: threading.Event) -> None:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def run_router(settings: Settings) -> int:
    from functions.router import route_event, route_events

    return Pump(
        Runtime(settings),
        settings.job_events_queue,
        route_event,
        batch_handler=route_events,
        concurrency=settings.router_concurrency,
    ).run()


def run_azure_ai(settings: Settings) -> int:
    from functions.azure_ai import handle_step_message

    return Pump(
        Runtime(settings),
        settings.azure_ai_queue,
        handle_step_message,
        concurrency=settings.concurrency(settings.azure_ai_concurrency),
    ).run()


def _run_until_stopped(settings: Settings, loop: Callable[[Runtime, threading.Event], object]) -> int:
    """A background loop of its own process: its connections, and SIGTERM/SIGINT to stop it."""
    runtime = Runtime(settings)
    stopping = threading.Event()
    _stop_on_signals(stopping)
    try:
        loop(runtime, stopping)
    finally:
        runtime.close()
    return 0


def run_relay(settings: Settings) -> int:
    """Publish committed outbox rows to Service Bus (DESIGN.md rule 1)."""
    from shared.bus.servicebus import ServiceBusBus

    def relay(runtime: Runtime, stopping: threading.Event) -> None:
        bus = runtime.bus
        if isinstance(bus, ServiceBusBus):
            bus.run_relay(stopping, interval=0.2)

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
    """The Streamlit ops dashboard on :8501. This process becomes Streamlit (exec), so that the
    supervisor's SIGTERM reaches it directly."""
    del settings  # the dashboard reads the same environment into its own Settings
    root = str(Path(__file__).resolve().parent.parent)
    environment = environment_snapshot()
    # `shared` must be importable from the dashboard script, wherever `make up` was run from.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environment.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "streamlit", "run", str(Path(root) / "dashboard" / "app.py")]
    argv += ["--server.port", str(DASHBOARD_PORT), "--server.headless", "true"]
    argv += ["--browser.gatherUsageStats", "false"]
    os.execve(sys.executable, argv, environment)  # noqa: S606 - our own interpreter and module


def run_api(settings: Settings) -> int:
    import uvicorn

    from functions.api import create_app

    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None)
    return 0


def run_worker(settings: Settings, kind: str) -> int:
    from gpu_worker.__main__ import main as worker_main

    return worker_main([kind], settings=settings)


# --- the supervisor


@dataclass
class Child:
    name: str
    argv: list[str]
    health_port: int | None = None
    """Workers' probe port: each worker on this machine gets its own (HEALTH_PORT, +1, …)."""
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = field(default=0.5)


def components(settings: Settings) -> list[str]:
    """Every consumer this code base has, for the configured bus."""
    names = ["api", "router", "webhooks", "deadletters"]
    if importlib.util.find_spec("functions.azure_ai") is not None:
        names.append("azure-ai")
    for kind in ("lid", "whisper"):
        if importlib.util.find_spec(f"gpu_worker.{kind}") is not None:
            names.append(kind)
    if settings.uses_service_bus:
        names.append("relay")
    if importlib.util.find_spec("streamlit") is not None:
        names.append("dashboard")
    return names


WORKER_COMPONENTS = frozenset({"lid", "whisper"})
"""Components that serve worker probes (/health, /ready, /metrics) on HEALTH_PORT."""


def replica_names(name: str, settings: Settings) -> list[str]:
    """One child per process of a component: `whisper`, `whisper-2`, … for WHISPER_WORKERS > 1."""
    count = settings.whisper.workers if name == "whisper" else 1
    return [name, *(f"{name}-{n}" for n in range(2, count + 1))]


class Supervisor:
    def __init__(self, settings: Settings, names: list[str], *, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = env
        self.children = [
            Child(label, [sys.executable, "-m", "shared.host", "run", name])
            for name in names
            for label in replica_names(name, settings)
        ]
        workers = [child for child in self.children if child.argv[-1] in WORKER_COMPONENTS]
        for offset, child in enumerate(workers):
            child.health_port = settings.health_port + offset if settings.health_port else 0
        self.stopping = threading.Event()

    def start(self, child: Child) -> None:
        env = self.env
        if child.health_port is not None:
            env = {**(env if env is not None else environment_snapshot()), "HEALTH_PORT": str(child.health_port)}
        child.process = subprocess.Popen(child.argv, env=env)  # noqa: S603 - our own interpreter and module
        child.started_at = time.monotonic()
        log.info("started %s (pid %s)", child.name, child.process.pid, extra={"action": "child_started"})

    def run(self) -> int:
        _stop_on_signals(self.stopping)
        for child in self.children:
            self.start(child)
        log.info(
            "SpeechFlow is up: API on http://%s:%s (docs at /docs); Ctrl-C stops",
            self.settings.api_host,
            self.settings.api_port,
            extra={"action": "stack_up"},
        )
        while not self.stopping.wait(0.5):
            for child in self.children:
                assert child.process is not None
                code = child.process.poll()
                if code is None:
                    continue
                # Back off a crash loop; a child that ran for a while restarts at once.
                lived = time.monotonic() - child.started_at
                child.backoff = 0.5 if lived > 30 else min(child.backoff * 2, 30.0)
                log.warning(
                    "%s exited with %s; restarting in %.1fs",
                    child.name,
                    code,
                    child.backoff,
                    extra={"action": "child_restart"},
                )
                if self.stopping.wait(child.backoff):
                    break
                child.restarts += 1
                self.start(child)
        return self.stop()

    def stop(self) -> int:
        log.info("stopping", extra={"action": "stack_stopping"})
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + 5
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing", child.name, extra={"action": "child_killed"})
                child.process.kill()
                child.process.wait()
        return 0


def up(settings: Settings, names: list[str] | None = None) -> int:
    from shared.db import migrate

    migrate(settings)
    runtime = Runtime(settings)
    try:
        runtime.blobs.ensure_containers()
    finally:
        runtime.close()
    env = environment_snapshot()
    if settings.api_key is None:
        # The embedded default is usable at once: a key of its own, kept under SPEECHFLOW_HOME, which
        # the CLI finds there too.
        env["SPEECHFLOW_API_KEY"] = ensure_local_api_key(settings)
        log.info(
            "API key for this stack is in %s (send it as x-api-key)",
            settings.speechflow_home / "api.key",
            extra={"action": "local_api_key"},
        )
    return Supervisor(settings, names or components(settings), env=env).run()


def ensure_local_api_key(settings: Settings) -> str:
    existing = local_api_key(settings)
    if existing:
        return existing
    path = settings.speechflow_home / "api.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "sfk_local_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


RUNNERS: dict[str, Callable[[Settings], int]] = {
    "api": run_api,
    "router": run_router,
    "azure-ai": run_azure_ai,
    "relay": run_relay,
    "dashboard": run_dashboard,
    "webhooks": run_webhooks,
    "deadletters": run_deadletters,
    "lid": lambda settings: run_worker(settings, "lid"),
    "whisper": lambda settings: run_worker(settings, "whisper"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.host", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    up_parser = sub.add_parser("up", help="run the whole stack (the default)")
    up_parser.add_argument("--only", nargs="*", choices=sorted(RUNNERS), help="run just these components")
    run_parser = sub.add_parser("run", help="run one component in this process")
    run_parser.add_argument("component", choices=sorted(RUNNERS))
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings)
    if args.command == "run":
        return RUNNERS[args.component](settings)
    return up(settings, getattr(args, "only", None))


if __name__ == "__main__":
    sys.exit(main())
