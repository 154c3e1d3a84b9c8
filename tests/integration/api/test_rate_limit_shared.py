"""The per-key rate limit on PostgreSQL is one bucket for every API process (docs/SECURITY.md).

The limiter is driven from many threads over two engines (as two replicas would), and then two real
API processes (uvicorn) on one database answer one key: together they allow no more than the burst.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from functions.api.security import SharedRateLimiter
from shared.core.config import Settings
from shared.core.db import migrate
from shared.domain.models import RateLimitBucket

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[3]
KEY = "a-bootstrap-key-for-the-shared-rate-limit-test"
NO_REFILL_PER_MINUTE = 1e-6
"""A token a million minutes: within a test, the burst is all a key gets."""


@pytest.fixture
def pg_url(pg_database_factory: Callable[[], str], tmp_path: Path) -> str:
    url = pg_database_factory()
    migrate(Settings(database_url=url, speechflow_home=tmp_path / "home"))
    return url


@pytest.fixture
def replicas(pg_url: str) -> Iterator[list[sessionmaker[Session]]]:
    """Two engines with their own connection pools, as two API processes have."""
    engines = [create_engine(pg_url, pool_size=8) for _ in range(2)]
    yield [sessionmaker(engine) for engine in engines]
    for engine in engines:
        engine.dispose()


def test_concurrent_requests_through_two_pools_take_exactly_the_burst(
    replicas: list[sessionmaker[Session]],
) -> None:
    limiters = [SharedRateLimiter(per_minute=NO_REFILL_PER_MINUTE, burst=40, sessions=s) for s in replicas]
    allowed = [0] * 8
    start = threading.Barrier(8)

    def hammer(index: int) -> None:
        limiter = limiters[index % 2]
        start.wait()
        allowed[index] = sum(limiter.acquire("key-1") == 0.0 for _ in range(25))

    threads = [threading.Thread(target=hammer, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(allowed) == 40  # 200 attempts: a lost update would let more through
    with replicas[0]() as session:
        tokens = session.execute(select(RateLimitBucket.tokens).where(RateLimitBucket.key == "key-1")).scalar_one()
    assert tokens == pytest.approx(0.0, abs=1e-3)


def test_the_bucket_refills_and_a_refusal_says_how_long_to_wait(replicas: list[sessionmaker[Session]]) -> None:
    limiter = SharedRateLimiter(per_minute=60, burst=2, sessions=replicas[0])
    other = SharedRateLimiter(per_minute=60, burst=2, sessions=replicas[1])

    assert [limiter.acquire("key-1"), other.acquire("key-1")] == [0.0, 0.0]
    wait = other.acquire("key-1")
    assert 0.5 < wait <= 1.0  # one token a second, minus the milliseconds since the last one
    assert limiter.acquire("key-2") == 0.0  # keys have their own buckets
    time.sleep(wait + 0.05)
    assert limiter.acquire("key-1") == 0.0
    assert other.acquire("key-1") > 0


def test_a_batch_takes_its_cost_and_one_over_the_burst_leaves_the_bucket_owing(
    replicas: list[sessionmaker[Session]],
) -> None:
    limiter = SharedRateLimiter(per_minute=NO_REFILL_PER_MINUTE, burst=5, sessions=replicas[0])
    other = SharedRateLimiter(per_minute=NO_REFILL_PER_MINUTE, burst=5, sessions=replicas[1])
    assert limiter.acquire("key-1") == 0.0  # the request's own token
    assert other.acquire("key-1", cost=11, taken=1.0) == 0.0  # a batch of 12 on a full bucket
    with replicas[0]() as session:
        tokens = session.execute(select(RateLimitBucket.tokens).where(RateLimitBucket.key == "key-1")).scalar_one()
    assert tokens == pytest.approx(-7.0, abs=1e-3)
    assert limiter.acquire("key-1") > 0
    assert other.acquire("key-2", cost=3) == 0.0
    assert other.acquire("key-2", cost=3) > 0  # 2 left: refused, and nothing taken
    assert other.acquire("key-2", cost=2) == 0.0


def test_zero_rate_turns_the_shared_limit_off(replicas: list[sessionmaker[Session]]) -> None:
    limiter = SharedRateLimiter(per_minute=0, burst=1, sessions=replicas[0])
    assert all(limiter.acquire("key-1") == 0.0 for _ in range(20))
    with replicas[0]() as session:
        assert session.execute(select(RateLimitBucket)).first() is None


# --- two API processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the API process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the API process did not come up:\n{log.read_text()[-3000:]}")


def address(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


@pytest.fixture
def two_api_processes(pg_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """The API twice, under uvicorn as `make up` and the container run it, on one database."""
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "SPEECHFLOW_HOME": str(tmp_path / "home"),
        "SPEECHFLOW_API_KEY": KEY,
        "RATE_LIMIT_BURST": "10",
        "RATE_LIMIT_PER_MINUTE": str(NO_REFILL_PER_MINUTE),
    }
    started: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    try:
        for index in range(2):
            port, log = free_port(), tmp_path / f"api-{index}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "--factory", "functions.api:create_app", *address(port)],
                    cwd=REPO,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            started.append((process, f"http://127.0.0.1:{port}", log))
        for process, url, log in started:
            wait_until_up(url, process, log)
        yield [url for _, url, _ in started]
    finally:
        for process, _, _ in started:
            process.terminate()
        for process, _, _ in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_two_api_processes_together_answer_no_more_than_the_limit(two_api_processes: list[str]) -> None:
    headers = {"x-api-key": KEY}
    answers: list[httpx.Response] = []
    with httpx.Client(timeout=10) as client:
        for _ in range(12):
            for url in two_api_processes:
                answers.append(client.get(f"{url}/jobs", headers=headers))

    codes = [answer.status_code for answer in answers]
    assert codes.count(200) == 10, codes
    assert codes.count(429) == 14, codes
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    # Each process answered some of the ten: with per-process buckets each would have allowed ten.
    allowed_by = {answer.request.url.port for answer in answers if answer.status_code == 200}
    assert len(allowed_by) == 2
