"""The fault-injection run: the real local stack (API, router, webhooks, dead-letter consumer, LID,
Whisper and azure-ai workers with the bundled model) on a private PostgreSQL, while a chaos driver
SIGKILLs workers and the router, kills the whole stack once and restarts it on the same state,
restarts PostgreSQL once, and injects poison messages and duplicate deliveries."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select, text

from shared.domain.models import QueueMessage
from shared.jobs.webhooks import verify
from tests.support.pgcluster import PrivateCluster
from tests.support.receiver import Receiver

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO / "tests" / "fixtures" / "audio"
API_KEY = "fault-suite-bootstrap-key-0123456789abcdef"
WEBHOOK_SECRET = "whsec_ZmF1bHQtc3VpdGUtd2ViaG9vay1zZWNyZXQtMTIzNDU2"
COMPONENTS = ["api", "router", "webhooks", "deadletters", "azure-ai", "lid", "whisper"]
KILLABLE = ["router", "lid", "whisper", "azure-ai", "deadletters", "webhooks"]
TERMINAL = {"completed", "partial_complete", "failed", "cancelled"}

# (workflow, clip, source_language)
MIX = [
    ("transcribe_only", "en/librivox-0880.wav", "eng"),
    ("lid_only", "fr/kokoro-bonjour_monde.wav", None),
    ("full_pipeline", "fr/kokoro-bonjour_monde.wav", None),
    ("transcribe_only", "en/kokoro-hello_world.wav", "eng"),
    ("lid_only", "zh/kokoro-nihao_shijie.wav", None),
    ("full_pipeline", "en/kokoro-counting.wav", None),
    ("transcribe_only", "en/librivox-0930.wav", "eng"),
    ("lid_only", "en/librivox-0890.wav", None),
]


@dataclass
class Figures:
    jobs: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    stack_kills: int = 0
    database_restarts: int = 0
    poison_messages: int = 0
    duplicate_deliveries: int = 0
    redeliveries: int = 0
    seconds: float = 0.0

    def lines(self) -> str:
        return (
            f"fault run: {self.jobs} jobs in {self.seconds:.0f} s; kills {dict(self.kills)} "
            f"(total {sum(self.kills.values())}); whole-stack kills {self.stack_kills}; "
            f"PostgreSQL restarts {self.database_restarts}; poison messages {self.poison_messages}; "
            f"duplicate deliveries {self.duplicate_deliveries}; redeliveries {self.redeliveries}"
        )


class Stack:
    """`python -m shared.hosting up` in its own session, so that the whole stack can be killed at once."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.hosting", "up", "--only", *COMPONENTS],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def children(self) -> dict[str, int]:
        assert self.process is not None
        found: dict[str, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) != self.process.pid:
                    continue
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if b"run" in argv:
                found[argv[argv.index(b"run") + 1].decode()] = int(stat.parent.name)
        return found

    def kill_child(self, name: str) -> bool:
        pid = self.children().get(name)
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def kill_all(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)


def wait_ready(base_url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the stack at {base_url} did not become ready")


def request(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """The API may be down for a moment (its process killed with the stack): retry until it answers."""
    deadline = time.monotonic() + 120
    while True:
        try:
            response = client.request(method, url, **kwargs)
            if response.status_code < 500:
                return response
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{method} {url} kept failing")
        time.sleep(0.5)


def submit(client: httpx.Client, index: int, callback_url: str) -> uuid.UUID:
    workflow, clip, language = MIX[index % len(MIX)]
    body: dict[str, Any] = {"workflow_type": workflow, "audio_filename": Path(clip).name, "callback_url": callback_url}
    if language:
        body["source_language"] = language
    created = request(client, "POST", "/jobs", json=body).json()
    put = httpx.put(
        created["upload_url"], content=(AUDIO / clip).read_bytes(), headers={"x-ms-blob-type": "BlockBlob"}, timeout=30
    )
    assert put.status_code == 201, put.text
    started = request(client, "POST", f"/jobs/{created['job_id']}/start")
    assert started.status_code in (202, 409), started.text  # 409: a retried start that had gone through
    return uuid.UUID(created["job_id"])


def inject_poison(url: str, queues: list[str]) -> int:
    """Malformed messages straight into every queue: they must be dead-lettered and accounted for."""
    engine = create_engine(url)
    now = int(time.time() * 1000)
    with engine.begin() as connection:
        for queue in queues:
            connection.execute(
                QueueMessage.__table__.insert().values(
                    queue=queue,
                    message_id=f"poison-{uuid.uuid4()}",
                    body='{"this is": "not a message"}',
                    state="active",
                    enqueued_ms=now,
                    visible_ms=now,
                    delivery_count=0,
                )
            )
    engine.dispose()
    return len(queues)


def duplicate_deliveries(url: str, limit: int) -> int:
    """Copies of messages already sent, under new ids (so no duplicate detection saves us)."""
    engine = create_engine(url)
    now = int(time.time() * 1000)
    with engine.begin() as connection:
        rows = connection.execute(
            select(QueueMessage.queue, QueueMessage.body)
            .where(QueueMessage.message_id.notlike("poison-%"), QueueMessage.message_id.notlike("dup-%"))
            .order_by(func.random())
            .limit(limit)
        ).all()
        for row in rows:
            connection.execute(
                QueueMessage.__table__.insert().values(
                    queue=row.queue,
                    message_id=f"dup-{uuid.uuid4()}",
                    body=row.body,
                    state="active",
                    enqueued_ms=now,
                    visible_ms=now,
                    delivery_count=0,
                )
            )
    engine.dispose()
    return len(rows)


def run(tmp: Path, receiver: Receiver, *, jobs: int, seed: int = 11) -> tuple[Figures, dict[str, Any]]:
    """Run the chaos and return the figures and everything the assertions need."""
    figures = Figures(jobs=jobs)
    chaos = random.Random(seed)
    cluster = PrivateCluster()
    cluster.start()
    try:
        url = cluster.create_database("speechflow")
        home = tmp / "home"
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DATABASE_URL": url,
            "SPEECHFLOW_HOME": str(home),
            "API_PORT": str(port),
            "SPEECHFLOW_PUBLIC_URL": base_url,
            "SPEECHFLOW_API_KEY": API_KEY,
            "CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "WEBHOOK_BACKOFF_SECONDS": "0.5",
            "QUEUE_LOCK_DURATION_SECONDS": "4",
            "RETRY_BACKOFF_SECONDS": "0.2",
            "SHUTDOWN_GRACE_SECONDS": "10",
            "RATE_LIMIT_PER_MINUTE": "0",
            "WHISPER_CPU_THREADS": "1",
            "LID_WINDOWS": "2",
        }
        env.pop("SERVICE_BUS_CONNECTION_STRING", None)
        env.pop("AZURE_STORAGE_CONNECTION_STRING", None)
        log = tmp / "stack.log"
        stack = Stack(env, log)
        started = time.monotonic()
        stack.start()
        wait_ready(base_url)
        client = httpx.Client(base_url=base_url, headers={"x-api-key": API_KEY}, timeout=30)

        job_ids: list[uuid.UUID] = []
        stop_chaos = threading.Event()

        def chaos_loop() -> None:
            while not stop_chaos.wait(chaos.uniform(1.5, 3.5)):
                name = chaos.choice(KILLABLE)
                if stack.kill_child(name):
                    figures.kills[name] += 1

        chaos_thread = threading.Thread(target=chaos_loop, daemon=True)
        chaos_thread.start()
        figures.poison_messages += inject_poison(url, ["job-events", "lid-jobs", "whisper-jobs", "azure-ai-jobs"])
        for index in range(jobs):
            job_ids.append(submit(client, index, receiver.url))
            if index == jobs // 3:
                figures.duplicate_deliveries += duplicate_deliveries(url, limit=max(4, jobs // 5))
                stack.kill_all()  # the whole stack at once, restarted on the same state
                figures.stack_kills += 1
                stack.start()
                wait_ready(base_url)
            if index == (2 * jobs) // 3:
                cluster.restart()  # PostgreSQL goes down as a crash would, and comes back
                figures.database_restarts += 1
                figures.duplicate_deliveries += duplicate_deliveries(url, limit=max(4, jobs // 5))

        # A bound, not a pace: generous, as the two cores may be shared (the jobs end well before it).
        statuses = wait_terminal(client, job_ids, timeout=180 + 12 * jobs)
        stop_chaos.set()
        chaos_thread.join()
        settled = wait_webhooks(client, job_ids, timeout=120)
        wait_dead_letters_drained(url, timeout=60)
        exit_code = stack.stop()
        figures.seconds = time.monotonic() - started
        engine = create_engine(url)
        with engine.connect() as connection:
            figures.redeliveries = int(
                connection.execute(
                    select(func.coalesce(func.sum(QueueMessage.delivery_count - 1), 0)).where(
                        QueueMessage.delivery_count > 1
                    )
                ).scalar()
                or 0
            )
            dead_letters = connection.execute(
                text(
                    "select message_id, queue, state, dead_letter_reason from queue_messages "
                    "where dead_letter_reason is not null"
                )
            ).all()
        engine.dispose()
        client.close()
        return figures, {
            "statuses": statuses,
            "jobs": settled,
            "home": home,
            "log": log,
            "exit_code": exit_code,
            "dead_letters": dead_letters,
        }
    finally:
        cluster.stop()


def wait_terminal(client: httpx.Client, job_ids: list[uuid.UUID], *, timeout: float) -> dict[uuid.UUID, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[uuid.UUID, str] = {}
    while time.monotonic() < deadline:
        for job_id in job_ids:
            if statuses.get(job_id) not in TERMINAL:
                statuses[job_id] = request(client, "GET", f"/jobs/{job_id}").json()["status"]
        if all(status in TERMINAL for status in statuses.values()):
            return statuses
        time.sleep(1.0)
    return statuses


def wait_webhooks(client: httpx.Client, job_ids: list[uuid.UUID], *, timeout: float) -> dict[uuid.UUID, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    jobs: dict[uuid.UUID, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        jobs = {job_id: request(client, "GET", f"/jobs/{job_id}").json() for job_id in job_ids}
        if all(job["webhooks"] and all(w["status"] != "pending" for w in job["webhooks"]) for job in jobs.values()):
            return jobs
        time.sleep(1.0)
    return jobs


def wait_dead_letters_drained(url: str, *, timeout: float) -> None:
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                dead = connection.execute(
                    select(func.count()).select_from(QueueMessage).where(QueueMessage.state == "dead")
                ).scalar()
            if dead == 0:
                return
            time.sleep(0.5)
    finally:
        engine.dispose()


def completions(log: Path) -> Counter[tuple[str, str]]:
    """(job_id, step_type) → how many times a worker logged completing that step."""
    counted: Counter[tuple[str, str]] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if '"step_completed"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("action") == "step_completed":
            counted[(entry["job_id"], entry["step_type"])] += 1
    return counted


def verify_signature(headers: dict[str, str], body: bytes) -> bool:
    return verify(WEBHOOK_SECRET, headers=headers, body=body)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
