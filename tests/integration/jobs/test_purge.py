"""DELETE /jobs/{id} purges a job's data (shared/jobs/retention.py), through the real stack on SQLite and
PostgreSQL: blobs, database text, the SQLite file and its journal, and the logs keep nothing of the
transcript; the job row stays as a tombstone; a purge interrupted half-way finishes on the next pass."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from shared.core.config import Settings
from shared.core.errors import Cancelled, PermanentError
from shared.core.logs import JsonFormatter
from shared.domain.models import Job, ProcessingStep, WebhookDelivery
from shared.jobs.retention import SCRUBBED, apply_retention, scrub_details
from shared.steps.runner import StepContext
from tests.support.pipeline import Stack, build_stack, fake_transcript, with_behaviours

PHRASE = "zebra quokka marmalade seventeen"
"""A transcript phrase found nowhere else, so that finding it on disk means the purge left it there."""


@pytest.fixture
def stack(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Stack]:
    settings = make_settings(database_url=database_url, lock_duration_seconds=5)
    built = build_stack(settings)
    yield built
    built.client.close()
    built.runtime.close()


def secret_transcript(step: StepContext) -> dict[str, Any]:
    transcript = fake_transcript(step.job.language or "fra")
    transcript["text"] = transcript["segments"][0]["text"] = PHRASE
    return transcript


def summary_refused(_step: StepContext) -> dict[str, Any]:
    # An engine's refusal that quotes the text, as a content filter's message may.
    raise PermanentError(f"the summary was refused for: {PHRASE}")


def sqlite_files(stack: Stack) -> list[Path]:
    url = stack.settings.effective_database_url
    if not url.startswith("sqlite"):
        return []
    database = Path(url.removeprefix("sqlite:///"))
    return [path for path in (database, Path(f"{database}-wal"), Path(f"{database}-journal")) if path.exists()]


def on_disk(stack: Stack, phrase: str) -> list[str]:
    """Every file under the blob folder and every SQLite file whose raw bytes hold the phrase."""
    needle = phrase.encode()
    files = [path for path in stack.settings.blob_root.rglob("*") if path.is_file()] + sqlite_files(stack)
    return [str(path) for path in files if needle in path.read_bytes()]


def test_delete_of_an_ended_job_purges_it_and_leaves_a_tombstone(stack: Stack) -> None:
    with_behaviours(stack.workers[1], [secret_transcript])
    summarize: list[Any] = []

    def translate_then_refuse(step: StepContext) -> dict[str, Any]:
        summarize.append(step.step_type)
        if step.step_type == "SUMMARIZE":
            return summary_refused(step)
        return {"text": PHRASE, "segments": [{"start": 0.0, "end": 1.6, "text": PHRASE}]}

    with_behaviours(stack.workers[2], [translate_then_refuse, translate_then_refuse])
    # Nothing listens on the discard port: the delivery fails at once and records its error.
    callback = "http://127.0.0.1:9/hook"
    job_id = stack.submit("full_pipeline", prompt="call Dr Quokka", hotwords=["Quokka"], callback_url=callback)
    stack.start(job_id)
    before = stack.drive(job_id)
    assert before is not None and before["status"] == "partial_complete"
    assert PHRASE in stack.client.get(f"/jobs/{job_id}/results", params={"format": "txt"}).text
    assert any(PHRASE in (step["error_message"] or "") for step in before["steps"])
    assert on_disk(stack, PHRASE), "the test can see the phrase on disk before the purge"
    results_folder = stack.settings.blob_root / stack.settings.results_container / str(job_id)
    audio_file = stack.settings.blob_root / stack.settings.audio_container / str(job_id) / "input" / "clip.wav"
    assert sorted(path.name for path in results_folder.iterdir()) and audio_file.exists()

    response = stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "partial_complete" and body["purged_at"] and body["purge_requested_at"]

    assert not results_folder.exists() and not audio_file.parent.parent.exists()
    assert on_disk(stack, PHRASE) == [], "nothing of the transcript is left in blobs, the database or its journal"

    gone = stack.client.get(f"/jobs/{job_id}/results")
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "purged"
    for fmt in ("srt", "vtt", "txt"):
        assert stack.client.get(f"/jobs/{job_id}/results", params={"format": fmt}).status_code == 410

    tombstone = stack.job(job_id)
    assert tombstone["status"] == "partial_complete"
    assert tombstone["purged_at"] == body["purged_at"] and tombstone["audio_deleted_at"]
    assert [(s["step_type"], s["status"]) for s in tombstone["steps"]] == [
        (s["step_type"], s["status"]) for s in before["steps"]
    ], "statuses are kept"
    assert all(s["started_at"] and s["completed_at"] for s in tombstone["steps"] if s["status"] == "completed")
    assert tombstone["usage"]["compute_seconds"] == before["usage"]["compute_seconds"], "usage is kept"
    assert "prompt" not in tombstone["options"] and "hotwords" not in tombstone["options"]
    assert tombstone["audio_filename"] == "purged.wav"
    assert PHRASE not in json.dumps(tombstone)
    assert {s["error_message"] for s in tombstone["steps"]} <= {None, SCRUBBED}

    again = stack.client.delete(f"/jobs/{job_id}")
    assert again.status_code == 200 and again.json()["purged_at"] == body["purged_at"], "a second DELETE is harmless"

    with stack.runtime.sessions() as session:
        payloads = [d.payload for d in session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))]
    assert payloads and all(PHRASE not in json.dumps(payload) for payload in payloads)


def test_the_logs_never_carry_transcript_text(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with_behaviours(stack.workers[1], [secret_transcript])
    job_id = stack.submit("transcribe_only", source_language="fra")
    stack.start(job_id)
    assert stack.drive(job_id)["status"] == "completed"  # type: ignore[index]
    assert stack.client.get(f"/jobs/{job_id}/results", params={"format": "txt"}).text.strip() == PHRASE
    assert stack.client.delete(f"/jobs/{job_id}").status_code == 200
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any('"action": "job_purged"' in line or '"action":"job_purged"' in line for line in lines), lines[-5:]
    assert [line for line in lines if "quokka" in line.lower()] == []


def test_delete_with_purge_on_a_running_job_cancels_then_purges_once_stopped(stack: Stack) -> None:
    job_id = stack.submit("transcribe_only", source_language="fra")
    answers: list[Any] = []

    def cancel_and_purge_midway(step: StepContext) -> dict[str, Any]:
        step.put_result_file("srt", f"1\n00:00:00,000 --> 00:00:01,000\n{PHRASE}\n", content_type="text/plain")
        response = stack.client.delete(f"/jobs/{job_id}", params={"purge": "true"})
        answers.append((response.status_code, response.json()))
        # still running: the purge waits for this step to stop
        assert stack.client.get(f"/jobs/{job_id}/results").status_code == 410
        step._last_cancel_check = 0.0
        if step.should_stop():
            raise Cancelled("job cancelled during transcription")
        return secret_transcript(step)

    with_behaviours(stack.workers[1], [cancel_and_purge_midway])
    stack.start(job_id)
    stack.drive(None)
    ((status_code, body),) = answers
    assert status_code == 202 and body["status"] == "cancelled"
    assert body["purge_requested_at"] and "purged_at" not in body, "not purged while its step ran"

    # As soon as the step has stopped (its failure routed), with no retention pass in between.
    job = stack.job(job_id)
    assert job["status"] == "cancelled" and job["purged_at"]
    assert on_disk(stack, PHRASE) == []
    assert not (stack.settings.blob_root / stack.settings.results_container / str(job_id)).exists()


def test_a_purge_interrupted_between_blob_deletes_finishes_on_the_next_pass(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_behaviours(stack.workers[1], [secret_transcript])
    job_id = stack.submit("transcribe_only", source_language="fra")
    stack.start(job_id)
    stack.drive(job_id)
    blobs = stack.runtime.blobs
    real_delete_prefix = blobs.delete_prefix

    def crash(container: str, prefix: str) -> int:
        raise OSError("disk went away")  # after the audio is deleted, before the results are

    monkeypatch.setattr(blobs, "delete_prefix", crash)
    response = stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 202, "the intent is recorded; the retention pass finishes it"
    assert response.json()["purge_requested_at"] and "purged_at" not in response.json()
    assert not (stack.settings.blob_root / stack.settings.audio_container / str(job_id) / "input" / "clip.wav").exists()
    assert stack.client.get(f"/jobs/{job_id}/results").status_code == 410
    assert on_disk(stack, PHRASE), "the results were not deleted yet"

    failed = apply_retention(stack.runtime)
    assert failed.failed == 1 and failed.purged == 0, "a failing purge is counted and left for the next pass"
    monkeypatch.setattr(blobs, "delete_prefix", real_delete_prefix)
    finished = apply_retention(stack.runtime)
    assert finished.purged == 1
    assert stack.job(job_id)["purged_at"]
    assert on_disk(stack, PHRASE) == []
    assert apply_retention(stack.runtime).purged == 0, "a purged job is not purged again"


def test_delete_of_a_pending_upload_job_cancels_it_as_before(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    response = stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json() == {"job_id": str(job_id), "status": "cancelled"}
    assert stack.job(job_id)["purge_requested_at"] is None
    assert (stack.settings.blob_root / stack.settings.audio_container / str(job_id) / "clip.wav").exists()


def test_a_step_stuck_processing_with_a_dead_worker_is_fenced_by_the_purge(stack: Stack) -> None:
    job_id = stack.submit("transcribe_only", source_language="fra")
    stack.start(job_id)
    stack.router.poll_once(max_wait=0.0)
    with stack.runtime.sessions() as session, session.begin():
        job = session.get_one(Job, job_id)
        job.status = "cancelled"
        step = session.scalars(select(ProcessingStep).where(ProcessingStep.job_id == job_id)).one()
        step.status, step.attempt, step.lease_expires_at = "processing", 1, None  # its worker died
    assert stack.client.delete(f"/jobs/{job_id}").status_code == 200
    (step_row,) = stack.job(job_id)["steps"]
    assert step_row["status"] == "failed", "a late completion by the dead worker's attempt is refused"


def test_scrub_details_keeps_figures_and_engine_names_only() -> None:
    details = {
        "model": "large-v3",
        "device": "cuda",
        "processing_seconds": 3.5,
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "note": PHRASE},
        "skipped": True,
        "reason": f"quoted {PHRASE}",
        "segments": [PHRASE],
    }
    assert scrub_details(details) == {
        "model": "large-v3",
        "device": "cuda",
        "processing_seconds": 3.5,
        "usage": {"prompt_tokens": 10, "completion_tokens": 4},
        "skipped": True,
    }
    assert scrub_details(None) is None
