"""Probes and metrics for processes that have no HTTP API of their own (the long-lived workers).

`HealthServer` serves, on a daemon thread at HEALTH_HOST:HEALTH_PORT (8080 by default, what the k8s
worker manifests probe):
- /health  liveness: the process answers;
- /ready   readiness: the database, blob storage and the bus can be reached (503 otherwise);
- /metrics the Prometheus exposition of this process (shared.metrics) plus jobs by status and queue depth.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import text

from shared.metrics import StateCollector, exposition, register_state_collector
from shared.runtime import Runtime

log = logging.getLogger(__name__)


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


def install_state_metrics(runtime: Runtime) -> StateCollector:
    """Export jobs by status and queue depths (read through `runtime` at scrape time) on /metrics."""
    from shared.ops import job_status_counts

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
                answer = {"status": "ok" if healthy else "unavailable", "checks": checks}
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
