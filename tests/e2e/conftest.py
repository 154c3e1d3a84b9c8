"""The real local stack, started as `make up` starts it, for tests that talk to it over HTTP only.

`python -m shared.hosting up --only api router lid whisper` runs in a subprocess under a temporary
SPEECHFLOW_HOME on a free port (SQLite by default, PostgreSQL when a test passes DATABASE_URL). The
fixture waits for GET /ready, hands out a `RunningStack`, and at the end sends SIGTERM and checks that
the host (and so every child it supervises) stopped cleanly with exit code 0.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO / "tests" / "fixtures" / "audio"
TERMINAL = {"completed", "partial_complete", "failed", "cancelled"}
STOP_TIMEOUT_S = 40.0
READY_TIMEOUT_S = 90.0
JobView = dict[str, Any]
"""A job as GET /jobs/{id} returns it."""

# Configuration that would point the stack at something other than its own temporary home.
_INHERITED_BUT_DROPPED = (
    "DATABASE_URL",
    "SERVICE_BUS_CONNECTION_STRING",
    "SERVICE_BUS_NAMESPACE",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "SPEECHFLOW_SIGNING_KEY",
    "ENTRA_TENANT_ID",
    "ENTRA_AUDIENCE",
)


@dataclass
class RunningStack:
    """A started local host and an HTTP client for its API."""

    base_url: str
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client

    def submit(self, path: Path, workflow: str, *, upload: bytes | None = None, **fields: Any) -> str:
        """Create the job, PUT the file to its upload URL, start it; returns the job id."""
        job_id = self.upload(path, workflow, upload=upload, **fields)
        started = self.start(job_id)
        assert started.status_code == 202, started.text
        return job_id

    def upload(self, path: Path, workflow: str, *, upload: bytes | None = None, **fields: Any) -> str:
        """Create the job and PUT the file (or `upload`) to its upload URL; returns the job id."""
        request = {"workflow_type": workflow, "audio_filename": path.name, **fields}
        created = self.client.post("/jobs", json=request)
        assert created.status_code == 201, created.text
        body = created.json()
        content = path.read_bytes() if upload is None else upload
        headers = {"x-ms-blob-type": "BlockBlob"}
        put = httpx.put(body["upload_url"], content=content, headers=headers, timeout=30)
        assert put.status_code == 201, put.text
        job_id: str = body["job_id"]
        return job_id

    def start(self, job_id: str) -> httpx.Response:
        return self.client.post(f"/jobs/{job_id}/start")

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def wait(self, job_ids: list[str], *, timeout: float = 120.0, poll: float = 0.2) -> dict[str, JobView]:
        """Poll until every job is terminal; returns each job as GET /jobs/{id} shows it."""
        deadline = time.monotonic() + timeout
        jobs: dict[str, JobView] = {}
        pending = set(job_ids)
        while True:
            # One listing per round rather than a request per job: the workers need the cores.
            if len(pending) > 1:
                listing = self.client.get("/jobs", params={"limit": 500})
                assert listing.status_code == 200, listing.text
                listed = listing.json()["items"]
                jobs.update((job["job_id"], job) for job in listed if job["job_id"] in pending)
            else:
                for job_id in pending:
                    # A live session's job exists once the session has closed: until then it is pending.
                    answer = self.client.get(f"/jobs/{job_id}")
                    if answer.status_code == 200:
                        jobs[job_id] = answer.json()
            pending -= {job_id for job_id in pending if jobs.get(job_id, {}).get("status") in TERMINAL}
            if not pending:
                return {job_id: jobs[job_id] for job_id in job_ids}
            if time.monotonic() > deadline or self.process.poll() is not None:
                states = {job_id: jobs.get(job_id, {}).get("status") for job_id in pending}
                pytest.fail(f"jobs not finished after {timeout:.0f} s: {states}\n{self.log_tail()}")
            time.sleep(poll)

    def results(self, job_id: str, fmt: str = "json") -> httpx.Response:
        params = {} if fmt == "json" else {"format": fmt}
        return self.client.get(f"/jobs/{job_id}/results", params=params)

    def children(self) -> dict[int, str]:
        """The host's child processes: pid → the component each runs (`shared.hosting run <component>`)."""
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parent = int(stat[stat.rindex(")") + 2 :].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if parent == self.process.pid and b"run" in argv:
                    found[int(entry.name)] = argv[argv.index(b"run") + 1].decode()
        return found

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_stack(
    home: Path, *, components: tuple[str, ...], env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """Start the host, wait until it is ready, yield it; stop it with SIGTERM and check exit code 0."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_key = secrets.token_urlsafe(32)
    child_env = {key: value for key, value in os.environ.items() if key not in _INHERITED_BUT_DROPPED}
    child_env.update(
        SPEECHFLOW_HOME=str(home),
        API_PORT=str(port),
        SPEECHFLOW_PUBLIC_URL=f"http://127.0.0.1:{port}",
        PYTHONPATH=str(REPO),
        SHUTDOWN_GRACE_SECONDS="20",
        # The bootstrap key (the API asks every caller for a key); no rate limit on the tests' polling.
        SPEECHFLOW_API_KEY=api_key,
        RATE_LIMIT_PER_MINUTE="0",
        # Worker probe servers would all want port 8080 of a machine shared with other runs.
        HEALTH_PORT="0",
        **(env or {}),
    )
    log_path = home / "host.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.hosting", "up", "--only", *components],
            cwd=REPO,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base_url, headers={"x-api-key": api_key}, timeout=30)
    stack = RunningStack(base_url, home, child_env, process, log_path, client)
    try:
        _wait_ready(stack)
        yield stack
    finally:
        client.close()
        code = _stop(process)
    assert code == 0, f"the host exited with {code} on SIGTERM\n{stack.log_tail()}"


def _wait_ready(stack: RunningStack) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            pytest.fail(f"the host exited with {stack.process.returncode} while starting\n{stack.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            if stack.client.get("/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"GET /ready did not answer 200 within {READY_TIMEOUT_S:.0f} s\n{stack.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the joined bundled model, shared by every stack of the session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def start_stack(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path
) -> Callable[..., contextlib.AbstractContextManager[RunningStack]]:
    """`with start_stack(components=(...), env={...}) as stack:` — a fresh home per stack."""

    def start(
        *,
        components: tuple[str, ...] = ("api", "router", "lid", "whisper"),
        env: dict[str, str] | None = None,
    ) -> contextlib.AbstractContextManager[RunningStack]:
        home = tmp_path_factory.mktemp("speechflow-home")
        return running_stack(
            home, components=components, env={"WHISPER_MODEL_CACHE_DIR": str(model_cache), **(env or {})}
        )

    return start


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without a log line per request."""

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture(scope="module")
def clip_server() -> Iterator[str]:
    """The audio fixtures over plain HTTP on 127.0.0.1; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(AUDIO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
