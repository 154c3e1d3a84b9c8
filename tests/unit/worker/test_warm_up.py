"""Warm-ups that do not slow the jobs (shared/worker/health.py): start-up work at the lowest CPU priority,
threads it leaves behind put back, and /ready saying what is still loading or warming."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from shared.core.config import Settings
from shared.runtime import Runtime
from shared.worker import health
from shared.worker.health import WARM_UPS, HealthServer, at_lowest_priority, warm_in_background, worker_states


def priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_start_up_work_runs_at_the_lowest_priority_and_its_threads_are_put_back() -> None:
    caller = priority()
    if not health._can_restore(caller):
        pytest.skip("this user may not raise a thread's priority back (not root, RLIMIT_NICE 0): work runs as is")
    seen: dict[str, int] = {}
    release = threading.Event()
    pool_native_id: list[int] = []

    def pool_thread() -> None:  # as a model's thread pool: started during the load, left running
        pool_native_id.append(threading.get_native_id())
        seen["pool_at_start"] = priority()
        release.wait(10)

    def work() -> str:
        seen["work"] = priority()
        threading.Thread(target=pool_thread, daemon=True).start()
        while not pool_native_id:
            time.sleep(0.01)
        return "loaded"

    assert at_lowest_priority(work) == "loaded"

    assert seen["work"] == health.LOWEST_PRIORITY
    assert seen["pool_at_start"] == health.LOWEST_PRIORITY
    assert os.getpriority(os.PRIO_PROCESS, pool_native_id[0]) == caller  # put back
    assert priority() == caller
    release.set()


def test_an_error_in_start_up_work_reaches_the_caller() -> None:
    def broken() -> None:
        raise RuntimeError("no CUDA device")

    with pytest.raises(RuntimeError, match="no CUDA device"):
        at_lowest_priority(broken)


def test_a_background_warm_up_says_warming_until_done_and_a_failed_one_still_ends_ready() -> None:
    go = threading.Event()
    thread = warm_in_background("test-warm", lambda: go.wait(10))
    assert WARM_UPS.states()["test-warm"] == "warming"
    go.set()
    thread.join(10)
    assert WARM_UPS.states()["test-warm"] == "ready"

    def broken() -> None:
        raise RuntimeError("numba is missing")

    warm_in_background("test-broken", broken).join(10)
    assert WARM_UPS.states()["test-broken"] == "ready"  # a job compiles what it needs itself


@pytest.fixture
def probe(make_settings) -> Iterator[HealthServer]:
    settings: Settings = make_settings(health_port=0)
    runtime = Runtime(settings)
    runtime.blobs.ensure_containers()
    server = HealthServer(runtime, host="127.0.0.1", port=0).start()
    yield server
    server.stop()
    runtime.close()


def test_a_workers_ready_lists_what_it_is_still_loading_or_warming(probe: HealthServer) -> None:
    WARM_UPS.set("diarize", "warming")
    WARM_UPS.set("whisper", "loading")
    try:
        answer = httpx.get(f"http://127.0.0.1:{probe.port}/ready", timeout=5).json()
        assert answer["components"]["diarize"] == "warming"
        assert {"diarize", "whisper"} <= set(answer["warming"])
        url = f"http://127.0.0.1:{probe.port}/ready"

        assert worker_states({"diarize": url, "gone": "http://127.0.0.1:9/ready"}) == {
            "diarize": "loading",  # the least ready of its components
            "gone": "starting",
        }
        WARM_UPS.set("whisper", "ready")
        assert worker_states({"diarize": url}) == {"diarize": "warming"}
    finally:
        WARM_UPS.set("diarize", "ready")
        WARM_UPS.set("whisper", "ready")
    assert worker_states({"diarize": f"http://127.0.0.1:{probe.port}/ready"}) == {"diarize": "ready"}


def test_worker_probes_are_read_from_name_url_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.core.config import SettingsError, get_settings

    monkeypatch.setenv("WORKER_PROBES", "lid=http://127.0.0.1:8080/ready, whisper=http://127.0.0.1:8081/ready")
    assert Settings().worker_probes == {
        "lid": "http://127.0.0.1:8080/ready",
        "whisper": "http://127.0.0.1:8081/ready",
    }
    monkeypatch.setenv("WORKER_PROBES", "lid")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match=r"^bad setting WORKER_PROBES=lid: expected name=url pairs"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_the_supervisor_tells_the_api_where_the_workers_probes_are(make_settings, monkeypatch) -> None:
    from shared.hosting import supervisor

    monkeypatch.setattr(supervisor, "machine_cores", lambda: 2)
    stack = supervisor.Supervisor(make_settings(health_port=9100), ["api", "lid", "whisper"], env={})
    started: dict[str, dict[str, str]] = {}

    class Recorded:
        pid = 1

    def popen(argv: list[str], env: dict[str, str]) -> Recorded:
        started[argv[-1]] = env
        return Recorded()

    monkeypatch.setattr(supervisor.subprocess, "Popen", popen)
    stack.start(stack.children[0])

    assert started["api"]["WORKER_PROBES"] == (
        "lid=http://127.0.0.1:9100/ready,whisper=http://127.0.0.1:9101/ready,whisper-2=http://127.0.0.1:9102/ready"
    )
