"""API → router → workers → results, through the real database (SQLite and PostgreSQL), the SQL
queue and the local blob store, with workers defined here. The HTTP contract of DESIGN.md."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.core.errors import Cancelled
from shared.domain.models import ProcessingStep, QueueMessage
from tests.support.pipeline import Stack, build_stack, permanent, transient, with_behaviours
from tests.support.receiver import webhook_receiver


@pytest.fixture
def stack(database_url: str, make_settings) -> Iterator[Stack]:
    settings = make_settings(database_url=database_url, lock_duration_seconds=5, retry_backoff_seconds=0.05)
    built = build_stack(settings)
    yield built
    built.client.close()
    built.runtime.close()


def steps_by_type(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step_type"]: step for step in job["steps"]}


def test_full_pipeline_french_produces_every_part(stack: Stack) -> None:
    job_id = stack.submit("full_pipeline")
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed"
    assert job["detected_language"] == "fra"
    steps = steps_by_type(job)
    assert list(steps) == ["LID", "TRANSCRIBE", "TRANSLATE", "SUMMARIZE"]
    assert all(step["status"] == "completed" and step["retry_count"] == 0 for step in steps.values())
    assert steps["TRANSCRIBE"]["details"]["model"] == "test"
    assert steps["TRANSCRIBE"]["progress"] == 1.0

    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["language"] == "fra"
    assert results["transcript"]["text"] == "bonjour le monde"
    assert results["transcript"]["segments"][0]["words"][2]["word"] == " monde"
    assert results["translation"]["text"] == "hello the world"
    assert results["translation"]["segments"][0]["start"] == 0.0
    assert results["summary"] == {"summary": "A greeting: bonjour le monde", "key_points": ["greeting"]}


def test_full_pipeline_english_skips_translation(stack: Stack) -> None:
    stack.workers[0].language = "eng"  # type: ignore[attr-defined]
    job_id = stack.submit("full_pipeline")
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed"
    translate = steps_by_type(job)["TRANSLATE"]
    assert translate["status"] == "completed"
    assert translate["details"] == {"skipped": True, "reason": "source language is English"}
    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["translation"] is None
    assert results["summary"]["key_points"] == ["greeting"]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("srt", "1\n00:00:00,000 --> 00:00:01,600\nbonjour le monde"),
        ("vtt", "WEBVTT"),
        ("txt", "bonjour le monde"),
    ],
)
def test_subtitles(stack: Stack, fmt: str, expected: str) -> None:
    job_id = stack.submit("transcribe_only", source_language="fra")
    stack.start(job_id)
    stack.drive(job_id)
    response = stack.client.get(f"/jobs/{job_id}/results", params={"format": fmt})
    assert response.status_code == 200
    assert response.text.startswith(expected)
    if fmt == "vtt":
        assert "00:00:00.000 --> 00:00:01.600" in response.text


def test_transient_failure_is_retried_then_completes(stack: Stack) -> None:
    with_behaviours(stack.workers[1], [transient, transient])
    job_id = stack.submit("transcribe_only", source_language="eng")
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed"
    step = steps_by_type(job)["TRANSCRIBE"]
    assert step["retry_count"] == 2
    assert step["error_message"] is None


def test_retries_exhausted_fails_the_job(stack: Stack) -> None:
    with_behaviours(stack.workers[0], [transient] * 4)
    job_id = stack.submit("lid_only")
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "failed"
    step = steps_by_type(job)["LID"]
    assert step["retry_count"] == stack.settings.max_retries
    assert "model server is busy" in step["error_message"]
    assert "LID failed" in job["error_message"]


def test_permanent_failure_fails_at_once(stack: Stack) -> None:
    with_behaviours(stack.workers[1], [permanent])
    job_id = stack.submit("transcribe_only", source_language="eng")
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "failed"
    step = steps_by_type(job)["TRANSCRIBE"]
    assert step["retry_count"] == 0
    assert step["error_message"] == "not an audio file"


def test_failed_translation_is_partial_complete_with_summary(stack: Stack) -> None:
    translate_fails: list[Any] = [permanent]
    with_behaviours(stack.workers[2], translate_fails)
    job_id = stack.submit("full_pipeline")
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "partial_complete"
    steps = steps_by_type(job)
    assert steps["TRANSLATE"]["status"] == "failed"
    assert steps["SUMMARIZE"]["status"] == "completed"
    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["transcript"] is not None and results["summary"] is not None
    assert results["translation"] is None


def test_translate_and_summarize_from_source_job(stack: Stack) -> None:
    source = stack.submit("transcribe_only", source_language="fra")
    stack.start(source)
    stack.drive(source)
    for workflow in ("translate_only", "summarize_only"):
        response = stack.client.post(
            "/jobs", json={"workflow_type": workflow, "source_language": "fra", "source_job_id": str(source)}
        )
        assert response.status_code == 201, response.text
        assert response.json()["upload_url"] is None
        job_id = uuid.UUID(response.json()["job_id"])
        stack.start(job_id)
        job = stack.drive(job_id)
        assert job is not None and job["status"] == "completed", job
    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["summary"]["summary"] == "A greeting: bonjour le monde"


# --- the HTTP contract


def test_unknown_workflow_is_422_in_the_error_format(stack: Stack) -> None:
    response = stack.client.post("/jobs", json={"audio_filename": "a.wav", "workflow_type": "dance_only"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "workflow_type" in error["message"]


@pytest.mark.parametrize("workflow", ["transcribe_only", "translate_only", "summarize_only"])
def test_source_language_required(stack: Stack, workflow: str) -> None:
    response = stack.client.post("/jobs", json={"audio_filename": "a.wav", "workflow_type": workflow})
    assert response.status_code == 422
    assert "requires source_language" in response.json()["error"]["message"]


def test_start_before_upload_is_409(stack: Stack) -> None:
    job_id = stack.submit("lid_only", upload=None, audio_filename="a.wav")
    response = stack.client.post(f"/jobs/{job_id}/start")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "upload_missing"
    assert stack.job(job_id)["status"] == "pending_upload"


def test_start_twice_is_409(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    stack.start(job_id)
    assert stack.client.post(f"/jobs/{job_id}/start").status_code == 409


def test_delete_pending_job_cancels_and_it_cannot_start(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    response = stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json() == {"job_id": str(job_id), "status": "cancelled"}
    assert stack.client.post(f"/jobs/{job_id}/start").status_code == 409


def test_cancelled_queued_job_never_runs_a_step(stack: Stack) -> None:
    job_id = stack.submit("full_pipeline")
    stack.start(job_id)
    assert stack.client.delete(f"/jobs/{job_id}").status_code == 200
    stack.drive(None)
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    assert job["steps"] == []
    with stack.runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ProcessingStep)) == 0
        pending = session.scalar(select(func.count()).select_from(QueueMessage).where(QueueMessage.state == "active"))
        assert pending == 0


def test_delete_processing_job_stops_it_between_steps(stack: Stack) -> None:
    job_id = stack.submit("full_pipeline")
    stack.start(job_id)
    stack.router.poll_once(max_wait=0.0)
    stack.workers[0].poll_once()  # LID completes
    assert stack.job(job_id)["status"] == "processing"
    response = stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    stack.drive(None)
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    assert [step["step_type"] for step in job["steps"]] == ["LID"], "no step starts after the cancel"
    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["language"] == "fra", "results of steps completed before the cancel stay readable"


def test_delete_stops_a_running_step_at_its_next_check(stack: Stack) -> None:
    job_id = stack.submit("transcribe_only", source_language="eng")
    seen: list[bool] = []

    def cancel_midway(step):  # the job is cancelled while this step works
        stack.client.delete(f"/jobs/{job_id}")
        seen.append(step.should_stop())
        if seen[-1]:
            raise Cancelled("job cancelled during transcription")
        return {}

    with_behaviours(stack.workers[1], [cancel_midway])
    stack.start(job_id)
    stack.drive(None)
    assert seen == [True]
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    step = job["steps"][0]
    assert step["status"] == "failed" and step["retry_count"] == 0
    assert "cancelled" in step["error_message"]
    assert stack.client.get(f"/jobs/{job_id}/results").status_code == 409, "a cancelled step writes no result"


def test_delete_of_a_finished_job_purges_it(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    stack.start(job_id)
    stack.drive(job_id)
    response = stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "completed" and response.json()["purged_at"]
    assert stack.client.get(f"/jobs/{job_id}/results").status_code == 410  # tests/integration/jobs/test_purge.py


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/jobs/{id}"), ("post", "/jobs/{id}/start"), ("delete", "/jobs/{id}"), ("get", "/jobs/{id}/results")],
)
def test_unknown_job_is_404(stack: Stack, method: str, path: str) -> None:
    response = getattr(stack.client, method)(path.format(id=uuid.uuid4()))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "params", [{"status": "sleeping"}, {"workflow_type": "x"}, {"limit": 0}, {"limit": 10_000}, {"offset": -1}]
)
def test_bad_list_filter_is_422(stack: Stack, params: dict[str, Any]) -> None:
    assert stack.client.get("/jobs", params=params).status_code == 422


def test_list_filters_and_pagination(stack: Stack) -> None:
    ids = [stack.submit("lid_only") for _ in range(3)]
    other = stack.submit("transcribe_only", source_language="eng")
    stack.client.delete(f"/jobs/{ids[0]}")
    listing = stack.client.get("/jobs", params={"workflow_type": "lid_only"}).json()
    assert listing["total"] == 3
    assert {item["job_id"] for item in listing["items"]} == {str(i) for i in ids}
    cancelled = stack.client.get("/jobs", params={"status": "cancelled"}).json()
    assert [item["job_id"] for item in cancelled["items"]] == [str(ids[0])]
    page = stack.client.get("/jobs", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 4 and len(page["items"]) == 2
    everything = stack.client.get("/jobs", params={"limit": 10}).json()
    assert str(other) in {item["job_id"] for item in everything["items"]}


def test_results_before_anything_is_ready_is_409(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    response = stack.client.get(f"/jobs/{job_id}/results")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_ready"


def test_filename_cannot_escape_the_job_folder(stack: Stack) -> None:
    response = stack.client.post("/jobs", json={"audio_filename": "../../etc/passwd", "workflow_type": "lid_only"})
    assert response.status_code == 201
    assert "/etc/" not in response.json()["upload_url"].split("?")[0].replace("/blobs/audio-files/", "")


def test_openapi_is_served(stack: Stack) -> None:
    spec = stack.client.get("/openapi.json").json()
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/start", "/jobs/{job_id}/results"} <= set(spec["paths"])
    assert stack.client.get("/docs").status_code == 200


def test_callback_is_posted_on_completion(stack: Stack) -> None:
    with webhook_receiver() as receiver:
        job_id = stack.submit("lid_only", callback_url=receiver.url)
        stack.start(job_id)
        stack.drive(job_id)
    ((_headers, body),) = receiver.requests
    payload = json.loads(body)
    assert payload["job_id"] == str(job_id)
    assert payload["status"] == "completed"
    assert payload["results_url"].endswith(f"/jobs/{job_id}/results")


def test_workers_and_router_settle_messages_in_their_own_transaction(stack: Stack) -> None:
    """On the SQL queue a step's completion and its message's settlement commit together: no
    separate complete call, and nothing left to redeliver."""
    calls: list[str] = []
    bus = stack.runtime.bus
    original = bus.complete, bus.complete_many
    bus.complete = lambda message: (calls.append(message.queue), original[0](message))[1]  # type: ignore[method-assign]
    bus.complete_many = lambda messages: (calls.extend(m.queue for m in messages), original[1](messages))[1]  # type: ignore[method-assign]
    job_id = stack.submit("full_pipeline")
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed"
    assert calls == [], calls
    with stack.runtime.sessions() as session:
        states = session.execute(select(QueueMessage.state, func.count()).group_by(QueueMessage.state)).all()
    assert dict(states) == {"done": 9}, states  # 1 start + 4 steps + 4 completions
