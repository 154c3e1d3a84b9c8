"""/metrics before and after a job through the stack (API, router, workers): the counters move."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.core.config import Settings
from shared.domain.registry import all_queues
from shared.runtime import Runtime
from shared.steps.runner import StepContext
from shared.worker.health import HealthServer, install_state_metrics
from tests.support.pipeline import Stack, build_stack, fake_transcript, transient, with_behaviours

STATE_CACHE_SECONDS = 2.0


@pytest.fixture
def stack(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url))
    yield built
    built.client.close()
    built.runtime.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def timed_transcript(step: StepContext) -> dict[str, Any]:
    step.details.update(audio_duration_seconds=12.5, model_seconds=1.25)
    return fake_transcript("fra")


def test_a_job_moves_the_counters(stack: Stack) -> None:
    before = samples(stack.client.get("/metrics").text)
    first_read = time.monotonic()
    assert value(before, "speechflow_jobs", status="completed") == 0

    with_behaviours(stack.workers[1], [transient, timed_transcript])
    job_id = stack.submit("full_pipeline")
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed"
    time.sleep(max(0.0, STATE_CACHE_SECONDS + 0.1 - (time.monotonic() - first_read)))

    response = stack.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("speechflow_steps_total", step_type="LID", outcome="completed") == 1
    assert moved("speechflow_steps_total", step_type="TRANSCRIBE", outcome="failed") == 1
    assert moved("speechflow_steps_total", step_type="TRANSCRIBE", outcome="completed") == 1
    assert moved("speechflow_step_retries_total", step_type="TRANSCRIBE") == 1
    assert moved("speechflow_step_duration_seconds_count", step_type="SUMMARIZE", outcome="completed") == 1
    assert moved("speechflow_audio_seconds_processed_total", step_type="TRANSCRIBE") == pytest.approx(12.5)
    assert moved("speechflow_model_seconds_total", step_type="TRANSCRIBE") == pytest.approx(1.25)
    assert moved("speechflow_routed_events_total", kind="job_started") == 1
    assert moved("speechflow_jobs_finished_total", status="completed") == 1
    assert value(after, "speechflow_jobs", status="completed") == 1
    assert value(after, "speechflow_jobs", status="processing") == 0
    for queue in all_queues(stack.settings):
        assert ("speechflow_queue_messages", (("queue", queue), ("state", "dead_letter"))) in after


def test_worker_probe_server_answers_health_ready_and_metrics(stack: Stack) -> None:
    stack.runtime.bus.send(stack.settings.lid_queue, message_id="waiting", body="{}")
    install_state_metrics(stack.runtime)
    server = HealthServer(stack.runtime, host="127.0.0.1", port=0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
            assert json.loads(response.read()) == {"status": "ok"}
        with urllib.request.urlopen(f"{base}/ready", timeout=5) as response:
            ready = json.loads(response.read())
        assert ready["status"] == "ok"
        assert ready["checks"] == {"database": "ok", "blob_storage": "ok", "bus": "ok"}
        # What this process is loading or warming (nothing here: no step consumer runs in it).
        not_ready = sorted(name for name, state in ready["components"].items() if state != "ready")
        assert ready["warming"] == not_ready
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            exposed = samples(response.read().decode())
        assert value(exposed, "speechflow_queue_messages", queue="lid-jobs", state="active") == 1
        try:
            urllib.request.urlopen(f"{base}/nothing", timeout=5)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as error:
            assert error.code == 404
    finally:
        server.stop()


def test_ready_reports_an_unreachable_database(make_settings: Callable[..., Settings], tmp_path: Any) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/missing/dir/none.db")
    stack_runtime = Runtime(settings)
    server = HealthServer(stack_runtime, host="127.0.0.1", port=0).start()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/ready", timeout=5)
        raise AssertionError("expected 503")
    except urllib.error.HTTPError as error:
        assert error.code == 503
        body = json.loads(error.read())
        assert body["status"] == "unavailable"
        assert body["checks"]["database"].startswith("unavailable")
    finally:
        server.stop()
        stack_runtime.close()
