"""The supervisor of the local stack: one child process per component (`python -m shared.host run
<component>`), restarted when it dies — at once after a long run, with backoff in a crash loop — as
Kubernetes would; SIGTERM or Ctrl-C stops them all, each within its shutdown grace period. `up` is
what `make up` runs: migrate, make the blob containers, give the embedded stack an API key, supervise.
What each component runs is in shared.host.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from shared.config import Settings, environment_snapshot, local_api_key
from shared.runtime import Runtime

log = logging.getLogger("speechflow.host")


def stop_on_signals(stopping: threading.Event) -> None:
    """SIGTERM and SIGINT set `stopping`."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


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


def worker_components(settings: Settings) -> frozenset[str]:
    """Components that serve worker probes (/health, /ready, /metrics) on HEALTH_PORT: the step
    registry's long-lived workers."""
    from shared.pipeline import worker_components as registered

    return frozenset(registered(settings))


WORKER_COMPONENTS = frozenset({"lid", "whisper"})
"""The workers every stack has (the registry may add more: `worker_components`)."""


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
        probed = worker_components(settings)
        workers = [child for child in self.children if child.argv[-1] in probed]
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
        stop_on_signals(self.stopping)
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


def up(settings: Settings, names: list[str]) -> int:
    """`make up`: migrate the database, make the blob containers, then supervise these components."""
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
    return Supervisor(settings, names, env=env).run()


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
