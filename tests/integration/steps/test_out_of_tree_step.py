"""A new step is one module: here a step declared outside the product code (in this test), registered,
put in a workflow, and run through the real router and the SQL queue by the product's component runner.

Nothing of shared/, functions/ or gpu_worker/ names it: the registry routes it to its queue, the
component runner takes it from there, the typed reader gives it the transcript, the result is written
where every result is, and its retry policy is its own (its spec's), not MAX_RETRIES.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from shared.core.errors import TransientError
from shared.domain.messages import result_blob_path
from shared.domain.registry import StepSpec, register, unregister
from shared.domain.results import ResultModel, Transcript
from shared.domain.workflow import WORKFLOWS, Node, Workflow
from shared.steps.context import StepContext
from shared.steps.inputs import read_result
from shared.worker.component import ComponentWorker
from tests.support.pipeline import Stack, build_stack


class WordCount(ResultModel):
    words: int
    language: str


ATTEMPTS: list[int] = []
FAIL_FIRST: list[bool] = [False]


def count_words(step: StepContext) -> WordCount:
    ATTEMPTS.append(step.claim.retry_count)
    if FAIL_FIRST[0]:
        raise TransientError("the word counter is busy")
    transcript = read_result(step, "TRANSCRIBE", Transcript)
    return WordCount(words=len(transcript.text.split()), language=transcript.language or "und")


SPEC = StepSpec(
    name="WORDCOUNT",
    title="Word count",
    queue="wordcount-jobs",
    component="wordcount",
    result=WordCount,
    inputs=("TRANSCRIBE",),
    process=count_words,
    max_retries=0,
)


class WordCountWorker(ComponentWorker):
    step_types: ClassVar[tuple[str, ...]] = ("WORDCOUNT",)
    receive_wait_seconds: ClassVar[float] = 0.0


@pytest.fixture
def stack(database_url: str, make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    register(SPEC)
    transcribe_only = WORKFLOWS["transcribe_only"]
    monkeypatch.setitem(
        WORKFLOWS,  # type: ignore[arg-type]
        "transcribe_only",
        Workflow((*transcribe_only.nodes, Node("WORDCOUNT", after=("TRANSCRIBE",), optional=True))),
    )
    ATTEMPTS.clear()
    FAIL_FIRST[0] = False
    settings = make_settings(database_url=database_url, lock_duration_seconds=5, retry_backoff_seconds=0.01)
    built = build_stack(settings)
    built.workers.append(WordCountWorker(built.settings, runtime=built.runtime))
    try:
        yield built
    finally:
        built.client.close()
        built.runtime.close()
        unregister("WORDCOUNT")


def test_a_step_declared_outside_the_product_runs_through_the_router_and_the_sql_queue(stack: Stack) -> None:
    job_id = stack.submit("transcribe_only", source_language="fra")
    stack.start(job_id)

    job = stack.drive(job_id)

    assert job is not None and job["status"] == "completed", job
    steps = {step["step_type"]: step for step in job["steps"]}
    assert steps["WORDCOUNT"]["status"] == "completed"
    stored = stack.runtime.blobs.get(stack.settings.results_container, result_blob_path(job_id, "WORDCOUNT"))
    assert WordCount.model_validate_json(stored) == WordCount(words=3, language="fra")
    assert stack.client.get(f"/jobs/{job_id}/results").status_code == 200


def test_its_retry_policy_is_its_own(stack: Stack) -> None:
    FAIL_FIRST[0] = True  # a passing failure, retried MAX_RETRIES (3) times by default; this step says 0
    job_id = stack.submit("transcribe_only", source_language="fra")
    stack.start(job_id)

    job = stack.drive(job_id)

    assert job is not None and job["status"] == "partial_complete", job
    assert ATTEMPTS == [0]
