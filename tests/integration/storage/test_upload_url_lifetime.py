"""An upload URL writes its job's upload only until the job starts; nothing is written under a purged
job, and the retention pass removes anything found under one anyway; a purge leaves no empty folders
(issue 20.4). Through the stack on SQLite and PostgreSQL, with the local blob store the URLs point to."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.core.config import Settings
from shared.jobs.retention import apply_retention
from tests.support.pipeline import TINY_WAV, Stack, build_stack

PUT = {"x-ms-blob-type": "BlockBlob"}


@pytest.fixture
def stack(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url, lock_duration_seconds=5))
    yield built
    built.client.close()
    built.runtime.close()


def created(stack: Stack, **fields: Any) -> tuple[uuid.UUID, str]:
    body = {"workflow_type": "transcribe_only", "source_language": "fra", "audio_filename": "clip.wav", **fields}
    response = stack.client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["job_id"]), response.json()["upload_url"]


def job_folder(stack: Stack, container: str, job_id: uuid.UUID) -> Path:
    return stack.settings.blob_root / container / str(job_id)


def assert_refused(response: Any, what: str) -> None:
    assert response.status_code == 403, f"{what}: {response.status_code} {response.text}"
    assert response.headers["x-ms-error-code"] == "AuthorizationFailure"


def test_the_upload_url_refuses_writes_once_the_job_has_started(stack: Stack) -> None:
    job_id, url = created(stack)
    assert stack.client.put(url, content=TINY_WAV, headers=PUT).status_code == 201
    assert stack.client.put(url, content=TINY_WAV, headers=PUT).status_code == 201, "overwriting before start is fine"
    stack.start(job_id)

    after_start = stack.client.put(url, content=b"not what was probed", headers=PUT)
    assert_refused(after_start, "Put Blob after start")
    assert "has started" in after_start.json()["error"]["message"]
    assert_refused(stack.client.put(f"{url}&comp=block&blockid=QUFBQQ==", content=b"x"), "Put Block after start")
    block_list = '<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>QUFBQQ==</Latest></BlockList>'
    assert_refused(stack.client.put(f"{url}&comp=blocklist", content=block_list), "Put Block List after start")
    # The job reads its upload's copy taken in at start (shared/jobs/uploads.py); the upload itself is gone.
    stored = stack.settings.blob_root / stack.settings.audio_container / str(job_id) / "input" / "clip.wav"
    assert stored.read_bytes() == TINY_WAV, "the probed upload is what the steps read"
    assert not (stored.parent.parent / "clip.wav").exists()

    assert stack.drive(job_id)["status"] == "completed"  # type: ignore[index]
    assert_refused(stack.client.put(url, content=TINY_WAV, headers=PUT), "Put Blob after completion")


def test_nothing_is_written_under_a_purged_job_and_retention_removes_what_is_found(stack: Stack) -> None:
    job_id, url = created(stack)
    assert stack.client.put(url, content=TINY_WAV, headers=PUT).status_code == 201
    stack.start(job_id)
    stack.drive(job_id)
    deleted = stack.client.delete(f"/jobs/{job_id}")
    assert deleted.status_code == 200 and deleted.json()["purged_at"], deleted.text

    audio, results = stack.settings.audio_container, stack.settings.results_container
    assert not job_folder(stack, audio, job_id).exists(), "the purge left the job's empty upload folder"
    assert not job_folder(stack, results, job_id).exists(), "the purge left the job's empty results folder"
    assert_refused(stack.client.put(url, content=TINY_WAV, headers=PUT), "Put Blob after purge")
    assert not job_folder(stack, audio, job_id).exists(), "a refused write left something behind"

    # Written anyway (an Azure SAS cannot be withdrawn before it expires): the next pass removes it.
    stack.runtime.blobs.put(audio, f"{job_id}/clip.wav", TINY_WAV)
    other_id, other_url = created(stack)
    assert stack.client.put(other_url, content=TINY_WAV, headers=PUT).status_code == 201
    apply_retention(stack.runtime)
    assert not job_folder(stack, audio, job_id).exists(), "the upload found under a purged job is still there"
    assert stack.runtime.blobs.exists(audio, f"{other_id}/clip.wav"), "a job still waiting for start keeps its upload"


def test_an_upload_url_of_a_job_cancelled_before_start_takes_no_writes(stack: Stack) -> None:
    job_id, url = created(stack)
    assert stack.client.delete(f"/jobs/{job_id}").status_code in (200, 202)
    assert_refused(stack.client.put(url, content=TINY_WAV, headers=PUT), "Put Blob after cancel")
