"""Graceful shutdown: a stopping worker takes no new message, finishes its current one within the
grace period, or hands the step back for another worker when the grace period runs out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shared.core.errors import ShutdownRequested
from shared.steps.runner import StepContext
from tests.support.pipeline import Stack, build_stack, with_behaviours


@pytest.fixture
def stack(database_url: str, make_settings) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url, shutdown_grace_seconds=0.3))
    yield built
    built.client.close()
    built.runtime.close()


def test_the_current_message_finishes_within_the_grace_period(stack: Stack) -> None:
    worker = stack.workers[0]
    started = threading.Event()

    def short_work(step: StepContext) -> dict[str, Any]:
        started.set()
        time.sleep(0.1)  # shorter than the grace period
        return {"language": "fra", "confidence": 1.0}

    with_behaviours(worker, [short_work])
    first, second = stack.submit("lid_only"), stack.submit("lid_only")
    stack.start(first)
    stack.start(second)
    stack.router.poll_once(max_wait=0.0)
    thread = threading.Thread(target=worker.poll_once)
    thread.start()
    assert started.wait(5)
    worker.request_stop()
    thread.join(5)
    outcomes = {job["job_id"]: job for job in (stack.job(first), stack.job(second))}
    finished = [job for job in outcomes.values() if job["steps"][0]["status"] == "completed"]
    assert len(finished) == 1, "the message in hand was finished"
    assert worker.stopping.is_set() and not worker.grace_over.is_set()


def test_past_the_grace_period_the_step_is_handed_back_and_another_worker_finishes_it(stack: Stack) -> None:
    worker = stack.workers[1]
    interrupted: list[bool] = []

    def long_work(step: StepContext) -> dict[str, Any]:
        while not step.should_stop():  # a transcription checks between segments
            time.sleep(0.02)
        interrupted.append(step.shutting_down)
        raise ShutdownRequested("the worker is shutting down")

    with_behaviours(worker, [long_work])
    job_id = stack.submit("transcribe_only", source_language="eng")
    stack.start(job_id)
    stack.router.poll_once(max_wait=0.0)
    thread = threading.Thread(target=worker.poll_once)
    thread.start()
    time.sleep(0.1)
    worker.request_stop()
    thread.join(5)
    assert interrupted == [True]
    step = stack.job(job_id)["steps"][0]
    assert step["status"] == "pending" and step["retry_count"] == 0, "handed back, not failed"

    # A fresh worker (the replacement pod) takes the abandoned message at once and completes the step.
    replacement = type(worker)(stack.settings, runtime=stack.runtime)
    assert replacement.poll_once()
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed"
    assert job["steps"][0]["retry_count"] == 0
