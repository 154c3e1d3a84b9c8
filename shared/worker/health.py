"""Probes and metrics for processes that have no HTTP API of their own (the long-lived workers).

`HealthServer` serves, on a daemon thread at HEALTH_HOST:HEALTH_PORT (8080 by default, what the k8s
worker manifests probe):
- /health  liveness: the process answers;
- /ready   readiness: the database, blob storage and the bus can be reached (503 otherwise), and what
           this process is still loading or warming (`components`);
- /metrics the Prometheus exposition of this process (shared.runtime.metrics) plus jobs by status and queue depth.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import text

from shared.jobs.ops import job_status_counts
from shared.runtime import Runtime
from shared.runtime.metrics import StateCollector, exposition, register_state_collector

log = logging.getLogger(__name__)

T = TypeVar("T")
WarmState = Literal["loading", "warming", "ready", "failed"]
LOWEST_PRIORITY = 19


class WarmUps:
    """What this process is loading (it takes no message yet) or warming (it takes messages; a first job
    may compile what the warm-up had not reached yet), by component, for /ready."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, WarmState] = {}

    def set(self, component: str, state: WarmState) -> None:
        with self._lock:
            self._states[component] = state

    def states(self) -> dict[str, WarmState]:
        with self._lock:
            return dict(self._states)


WARM_UPS = WarmUps()
"""This process's components and their warm-up state."""


def _threads() -> set[int]:
    try:
        return {int(path.name) for path in Path("/proc/self/task").iterdir()}
    except OSError:
        return set()


def _can_restore(priority: int) -> bool:
    """Whether threads lowered to LOWEST_PRIORITY may be raised back to `priority` (root, or an
    RLIMIT_NICE that allows it): without that, nothing is lowered, or the work would stay slow for good."""
    if not Path("/proc/self/task").is_dir():
        return False
    if os.geteuid() == 0:
        return True
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or 20 - soft <= priority


def _restore(threads: set[int], priority: int) -> None:
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > priority:
                os.setpriority(os.PRIO_PROCESS, tid, priority)
        except OSError:
            continue  # the thread has ended


def at_lowest_priority(work: Callable[[], T]) -> T:
    """Run `work` on a thread at the lowest CPU priority and wait for it: start-up work (imports, model
    loads, compiles) then takes only the CPU that jobs leave, so a job sent as soon as the stack answers
    runs at its warm speed. Threads that `work` starts and leaves running (a model's thread pool) are put
    back to the caller's priority afterwards. Where that is not allowed, `work` runs as it is."""
    priority = os.getpriority(os.PRIO_PROCESS, 0)
    if not _can_restore(priority):
        return work()
    before = _threads()
    outcome: dict[str, Any] = {}

    def lowered() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
            outcome["value"] = work()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=lowered, name="warm-up", daemon=True)
    thread.start()
    thread.join()
    _restore(_threads() - before, priority)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def warm_in_background(component: str, work: Callable[[], object]) -> threading.Thread:
    """Warm `component` on a thread of its own at the lowest CPU priority while the process takes jobs;
    /ready says `warming` until it is done."""
    WARM_UPS.set(component, "warming")

    def warm() -> None:
        try:
            at_lowest_priority(work)
            WARM_UPS.set(component, "ready")
            log.info("warmed up", extra={"action": "warm_up_done", "component": component})
        except Exception as error:
            # A warm-up only saves a first job's time: the job compiles what it needs itself.
            WARM_UPS.set(component, "ready")
            log.warning("warm-up failed: %s", error, extra={"action": "warm_up_failed", "component": component})

    thread = threading.Thread(target=warm, name=f"warm-{component}", daemon=True)
    thread.start()
    return thread


def readiness(runtime: Runtime) -> tuple[bool, dict[str, str]]:
    """Whether the database, blob storage and the bus can be reached, with each check's result."""

    def database() -> None:
        with runtime.engine.connect() as connection:
            connection.execute(text("select 1"))

    checks: dict[str, str] = {}
    for name, probe in (
        ("database", database),
        ("blob_storage", runtime.blobs.ping),
        ("bus", runtime.bus.queue_depths),
    ):
        try:
            probe()
            checks[name] = "ok"
        except Exception as error:
            checks[name] = f"unavailable: {error.__class__.__name__}"
    return all(value == "ok" for value in checks.values()), checks


def worker_states(probes: dict[str, str], *, timeout: float = 1.0) -> dict[str, str]:
    """Each local worker's warm-up state from its /ready (`WORKER_PROBES`): `loading`, `warming`, `ready`,
    `failed`, or `starting` while its process has no probe server up yet."""
    import httpx

    states: dict[str, str] = {}
    for name, url in probes.items():
        try:
            answer = httpx.get(url, timeout=timeout).json()
            components = answer.get("components") or {}
        except (httpx.HTTPError, ValueError, AttributeError):
            states[name] = "starting"
            continue
        order = ("failed", "loading", "warming")
        states[name] = next((state for state in order if state in components.values()), "ready")
    return states


def install_state_metrics(runtime: Runtime) -> StateCollector:
    """Export jobs by status and queue depths (read through `runtime` at scrape time) on /metrics."""

    def job_counts() -> dict[str, int]:
        with runtime.sessions() as session:
            return job_status_counts(session=session)

    collector = StateCollector(job_counts=job_counts, queue_depths=runtime.bus.queue_depths)
    register_state_collector(collector)
    return collector


class HealthServer:
    """The probe server; `start()` returns at once, `stop()` shuts it down."""

    def __init__(self, runtime: Runtime, *, host: str | None = None, port: int | None = None) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self._server = ThreadingHTTPServer(
            (
                host if host is not None else settings.health_host,
                port if port is not None else settings.health_port,
            ),
            _handler_for(runtime),
        )
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health server listening", extra={"action": "health_server_started", "port": self.port})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_health_server(runtime: Runtime) -> HealthServer | None:
    """Start the probe server unless HEALTH_PORT is 0; a port already taken is logged, not fatal, so that
    a second local worker on one machine still runs (Kubernetes gives each pod its own port space)."""
    if runtime.settings.health_port == 0:
        return None
    try:
        server = HealthServer(runtime)
    except OSError as error:
        log.warning(
            "health server not started: %s",
            error,
            extra={"action": "health_server_failed", "port": runtime.settings.health_port},
        )
        return None
    install_state_metrics(runtime)
    return server.start()


def _handler_for(runtime: Runtime) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._json(200, {"status": "ok"})
            elif path == "/ready":
                healthy, checks = readiness(runtime)
                components = WARM_UPS.states()
                answer = {
                    "status": "ok" if healthy else "unavailable",
                    "checks": checks,
                    "components": components,
                    "warming": sorted(name for name, state in components.items() if state != "ready"),
                }
                self._json(200 if healthy else 503, answer)
            elif path == "/metrics":
                body, content_type = exposition()
                self._send(200, body, content_type)
            else:
                error = {"code": "not_found", "message": f"no route {path}", "details": None}
                self._json(404, {"error": error})

        def _json(self, status: int, content: dict[str, Any]) -> None:
            self._send(status, json.dumps(content).encode("utf-8"), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes every few seconds would drown the worker's own log lines.
            del format, args

    return Handler
