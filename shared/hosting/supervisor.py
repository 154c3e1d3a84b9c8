"""The supervisor of the local stack: one child process per component (`python -m shared.hosting run
<component>`), restarted when it dies — at once after a long run, with backoff in a crash loop — as
Kubernetes would; SIGTERM or Ctrl-C stops them all, each within its shutdown grace period. `up` is
what `make up` runs: migrate, make the blob containers, give the embedded stack an API key, supervise.
What each component runs is in shared.hosting.host.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from shared.core.config import Settings, environment_snapshot, local_api_key
from shared.core.db import migrate
from shared.core.errors import ConfigurationError
from shared.domain.registry import worker_components as registered
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

    return frozenset(registered(settings))


GIB = 1024**3
WHISPER_WORKER_BYTES = {"bundled": int(1.25 * GIB), "large": 4 * GIB}
"""What one transcription worker holds at its peak on a 10-minute recording (bench/long_audio.py: about
1.0–1.2 GiB with the bundled base model, int8); large models, about 4 GiB on CPU."""
MEMORY_SHARE = 0.5
"""The share of the machine's memory the transcription workers may take: the rest is the database,
the other workers and the recordings being decoded."""


@dataclass(frozen=True)
class Layout:
    workers: int
    threads: int
    reason: str


def machine_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def machine_memory() -> int:
    """Bytes of memory: the physical memory, capped by a cgroup memory limit (a container)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            memory = min(memory, int(limit))
    except (OSError, ValueError):
        pass
    return memory


def whisper_layout(settings: Settings, *, cores: int, memory: int) -> Layout:
    """How many transcription workers `make up` runs, and threads each. Measured on 2 cores (an Intel
    Xeon with AVX-512 and an AMD EPYC with AVX2, bundled model, int8): 2 workers × 1 thread against
    1 × 2 took 0.52 against 0.88 of raw sequential on 24 short jobs at once (bench/transcribe.py W) and
    0.36 against 0.47 (Xeon), 0.58 against 0.71 (EPYC) on a 10-minute file (bench/long_audio.py) — one
    single-threaded worker per core, then, as many as MEMORY_SHARE of memory holds. On CUDA one worker
    has the GPU. WHISPER_WORKERS and WHISPER_CPU_THREADS, when set (> 0), win."""
    config = settings.whisper
    if config.device == "cuda":
        workers, reason = config.workers or 1, "one worker per GPU"
    elif config.workers:
        workers, reason = config.workers, "WHISPER_WORKERS"
    else:
        per_worker = WHISPER_WORKER_BYTES["bundled" if config.model == "bundled" else "large"]
        fits = max(1, int(memory * MEMORY_SHARE // per_worker))
        workers = max(1, min(cores, fits))
        reason = f"{cores} cores, {memory / GIB:.0f} GiB: one single-threaded worker per core that memory holds"
    threads = config.cpu_threads or max(1, cores // workers)
    return Layout(workers=workers, threads=threads, reason=reason)


def local_layout(settings: Settings) -> Layout:
    return whisper_layout(settings, cores=machine_cores(), memory=machine_memory())


def replica_names(name: str, settings: Settings, layout: Layout | None = None) -> list[str]:
    """One child per process of a component: `whisper`, `whisper-2`, … for several transcription workers."""
    count = (layout or local_layout(settings)).workers if name == "whisper" else 1
    return [name, *(f"{name}-{n}" for n in range(2, count + 1))]


PORT_PATIENCE_S = 3.0
"""How long `up` waits for a taken port to come free before it gives up (Supervisor.check_ports)."""


class PortInUse(ConfigurationError):
    """A port the local stack would listen on is taken, most often by a stack already running."""


@dataclass(frozen=True)
class Listener:
    setting: str
    """The variable that moves it."""
    what: str
    host: str
    port: int


def port_is_free(host: str, port: int) -> bool:
    """Whether a listening socket could bind host:port now. SO_REUSEADDR, as the servers set it, so a
    port left in TIME_WAIT by a stack just stopped counts as free."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError:
        return True  # an unresolvable host is the server's own error to report
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


class Supervisor:
    def __init__(self, settings: Settings, names: list[str], *, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = env
        self.layout = local_layout(settings)
        self.children = [
            Child(label, [sys.executable, "-m", "shared.hosting", "run", name])
            for name in names
            for label in replica_names(name, settings, self.layout)
        ]
        probed = worker_components(settings)
        workers = [child for child in self.children if child.argv[-1] in probed]
        for offset, child in enumerate(workers):
            child.health_port = settings.health_port + offset if settings.health_port else 0
        host = "127.0.0.1" if settings.health_host in ("0.0.0.0", "::", "") else settings.health_host  # noqa: S104
        self.worker_probes = ",".join(
            f"{child.name}=http://{host}:{child.health_port}/ready" for child in workers if child.health_port
        )
        self.stopping = threading.Event()

    def listeners(self) -> list[Listener]:
        """The servers the children will run: the API, the live component, the dashboard. (A worker whose
        probe port is taken logs a warning and works on without its probes.)"""
        settings, names = self.settings, {child.argv[-1] for child in self.children}
        found = []
        if "api" in names:
            found.append(Listener("API_PORT", "the API", settings.api_host, settings.api_port))
        if "realtime" in names and settings.realtime_port:
            found.append(
                Listener("REALTIME_PORT", "live transcription", settings.realtime_host, settings.realtime_port)
            )
        if "dashboard" in names:
            found.append(Listener("DASHBOARD_PORT", "the dashboard", settings.api_host, settings.dashboard_port))
        return found

    def check_ports(self, *, patience: float = PORT_PATIENCE_S) -> None:
        """Stop before starting anything when a server's port is taken: its child would otherwise fail to
        bind and be restarted for ever. A stack killed just before may still be letting go of its ports:
        each is given `patience` seconds to come free."""
        deadline = time.monotonic() + patience
        for listener in self.listeners():
            while not port_is_free(listener.host, listener.port):
                if time.monotonic() >= deadline:
                    raise PortInUse(
                        f"port {listener.port} on {listener.host or '*'} ({listener.setting}, {listener.what}) is in"
                        f" use: is SpeechFlow already running? Stop it, or set {listener.setting} to a free port"
                    )
                time.sleep(0.2)

    def start(self, child: Child) -> None:
        env = self.env
        if child.health_port is not None:
            env = {**(env if env is not None else environment_snapshot()), "HEALTH_PORT": str(child.health_port)}
        if child.argv[-1] == "whisper":
            env = {**(env if env is not None else environment_snapshot())}
            env["WHISPER_CPU_THREADS"] = str(self.layout.threads)
        if child.argv[-1] == "api" and self.worker_probes:
            env = {**(env if env is not None else environment_snapshot()), "WORKER_PROBES": self.worker_probes}
        child.process = subprocess.Popen(child.argv, env=env)  # noqa: S603 - our own interpreter and module
        child.started_at = time.monotonic()
        log.info("started %s (pid %s)", child.name, child.process.pid, extra={"action": "child_started"})

    def run(self) -> int:
        stop_on_signals(self.stopping)
        if any(child.argv[-1] == "whisper" for child in self.children):
            log.info(
                "transcription: %d worker(s) × %d thread(s) (%s)",
                self.layout.workers,
                self.layout.threads,
                self.layout.reason,
                extra={"action": "whisper_layout", "workers": self.layout.workers, "threads": self.layout.threads},
            )
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
    """`make up`: check that its ports are free, migrate the database, make the blob containers, then
    supervise these components. A port in use raises PortInUse before anything is touched."""

    env = environment_snapshot()
    supervisor = Supervisor(settings, names, env=env)
    supervisor.check_ports()
    migrate(settings)
    runtime = Runtime(settings)
    try:
        runtime.blobs.ensure_containers()
    finally:
        runtime.close()
    if settings.api_key is None:
        # The embedded default is usable at once: a key of its own, kept under SPEECHFLOW_HOME, which
        # the CLI finds there too.
        env["SPEECHFLOW_API_KEY"] = ensure_local_api_key(settings)  # the supervisor's env: this very dict
        log.info(
            "API key for this stack is in %s (send it as x-api-key)",
            settings.speechflow_home / "api.key",
            extra={"action": "local_api_key"},
        )
    return supervisor.run()


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
