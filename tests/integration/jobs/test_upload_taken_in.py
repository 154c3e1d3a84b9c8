"""When a job starts, its upload is copied server-side to `{job_id}/input/…`, a name no upload URL
covers, and the upload itself is deleted (shared/jobs/uploads.py): a write through the old URL afterwards —
accepted on Azure, whose SAS cannot be withdrawn, refused by the local upload route — changes nothing a
step reads, and retention deletes it. Through the API and the steps, with the local blob store and with
Azure Blob Storage (Azurite), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from shared.core.config import Settings
from shared.domain.models import Job, utcnow
from shared.jobs.retention import apply_retention
from shared.steps.context import StepContext
from tests.support.azurite import azurite_connection_string  # noqa: F401
from tests.support.pipeline import Stack, build_stack, silent_wav, with_behaviours

PUT = {"x-ms-blob-type": "BlockBlob"}
UPLOAD = silent_wav(0.5)
LATE = silent_wav(0.7)
"""What a client writes through the upload URL after start: valid audio too, but not what was probed."""


@pytest.fixture(params=["local", pytest.param("azurite", marks=pytest.mark.azurite)])
def stack(request: pytest.FixtureRequest, database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Stack]:
    suffix = uuid.uuid4().hex[:12]
    values: dict[str, Any] = {"database_url": database_url, "lock_duration_seconds": 5}
    if request.param == "azurite":
        values.update(
            azure_storage_connection_string=request.getfixturevalue("azurite_connection_string"),
            audio_container=f"audio-{suffix}",
            results_container=f"results-{suffix}",
        )
    built = build_stack(make_settings(**values))
    yield built
    built.client.close()
    built.runtime.close()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    """How a client calls the upload URL: Azurite over HTTP, the local upload route in-process."""
    if stack.settings.uses_azure_blob:
        with httpx.Client(timeout=30) as client:
            yield client
    else:
        yield stack.client


def created(stack: Stack, http: httpx.Client) -> tuple[uuid.UUID, str]:
    body = {"workflow_type": "full_pipeline", "audio_filename": "clip.wav"}
    response = stack.client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id, url = uuid.UUID(response.json()["job_id"]), response.json()["upload_url"]
    assert http.put(url, content=UPLOAD, headers=PUT).status_code == 201
    return job_id, url


class Killed(Exception):
    """Stands for the process dying at that point."""


def audio_path(stack: Stack, job_id: uuid.UUID) -> str | None:
    with stack.runtime.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.audio_blob_path


def blobs_under(stack: Stack, job_id: uuid.UUID) -> bool:
    return str(job_id) in stack.runtime.blobs.folders(stack.settings.audio_container)


def test_after_start_a_write_through_the_old_url_changes_nothing_a_step_reads(stack: Stack, http: httpx.Client) -> None:
    audio = stack.settings.audio_container
    job_id, url = created(stack, http)
    stack.start(job_id)

    taken = audio_path(stack, job_id)
    assert taken == f"{job_id}/input/clip.wav"
    assert stack.runtime.blobs.get(audio, taken) == UPLOAD
    assert not stack.runtime.blobs.exists(audio, f"{job_id}/clip.wav"), "the upload stays after start"

    late = http.put(url, content=LATE, headers=PUT)
    if stack.settings.uses_azure_blob:
        assert late.status_code == 201, "an Azure SAS still takes writes until it expires"
    else:
        assert late.status_code == 403, late.text  # the local route closes the URL at start as well
    assert stack.runtime.blobs.get(audio, taken) == UPLOAD

    read: list[bytes] = []

    def lid_reads(step: StepContext) -> dict[str, Any]:
        with step.input_file() as path:
            read.append(path.read_bytes())
        step.job_updates.update(detected_language="fra", language_confidence=0.97)
        return {"language": "fra", "confidence": 0.97}

    with_behaviours(stack.workers[0], [lid_reads])
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed", job
    assert read == [UPLOAD], "the step read something else than the probed upload"

    # Audio retention deletes the job's whole upload folder: the copy and whatever the URL wrote.
    later = utcnow() + timedelta(seconds=stack.settings.audio_retention_seconds + 60)
    assert apply_retention(stack.runtime, now=later).audio_deleted == 1
    assert not blobs_under(stack, job_id)
    if stack.settings.uses_azure_blob:
        # Written again while the SAS lasts, after the audio was deleted: the next pass removes it.
        assert http.put(url, content=LATE, headers=PUT).status_code == 201
        apply_retention(stack.runtime, now=later)
        assert not blobs_under(stack, job_id)


def test_a_refused_upload_leaves_no_copy_and_can_be_uploaded_again(stack: Stack, http: httpx.Client) -> None:
    audio = stack.settings.audio_container
    response = stack.client.post("/jobs", json={"workflow_type": "full_pipeline", "audio_filename": "clip.wav"})
    job_id, url = uuid.UUID(response.json()["job_id"]), response.json()["upload_url"]
    assert http.put(url, content=b"not audio at all", headers=PUT).status_code == 201

    refused = stack.client.post(f"/jobs/{job_id}/start")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_audio", refused.text
    assert audio_path(stack, job_id) == f"{job_id}/clip.wav"
    assert not stack.runtime.blobs.exists(audio, f"{job_id}/input/clip.wav"), "a refused start left its copy"

    assert http.put(url, content=UPLOAD, headers=PUT).status_code == 201
    stack.start(job_id)
    assert stack.runtime.blobs.get(audio, f"{job_id}/input/clip.wav") == UPLOAD


def test_a_start_killed_between_copy_and_commit_leaves_the_job_whole(
    stack: Stack, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functions.api.routes.jobs as app_module

    audio = stack.settings.audio_container
    job_id, _ = created(stack, http)
    real_take_in = app_module.take_in

    def copied_then_killed(*args: Any, **kwargs: Any) -> str:
        real_take_in(*args, **kwargs)
        raise Killed  # before the route's own clean-up: as if the process died here

    monkeypatch.setattr(app_module, "take_in", copied_then_killed)
    try:
        answer = stack.client.post(f"/jobs/{job_id}/start")
    except Killed:
        pass
    else:
        assert answer.status_code == 500, answer.text
    monkeypatch.undo()
    assert stack.job(job_id)["status"] == "pending_upload"
    assert audio_path(stack, job_id) == f"{job_id}/clip.wav"
    assert stack.runtime.blobs.get(audio, f"{job_id}/clip.wav") == UPLOAD, "the job names a blob that is gone"

    stack.start(job_id)  # the retry copies again over the same name
    assert audio_path(stack, job_id) == f"{job_id}/input/clip.wav"
    assert stack.runtime.blobs.get(audio, f"{job_id}/input/clip.wav") == UPLOAD

    # Killed after the commit, before the upload is deleted: the job reads the copy; the upload left
    # behind goes with the job's folder when it is purged.
    other_id, _ = created(stack, http)
    monkeypatch.setattr(app_module, "let_go", lambda *args, **kwargs: None)
    stack.start(other_id)
    assert audio_path(stack, other_id) == f"{other_id}/input/clip.wav"
    assert stack.runtime.blobs.exists(audio, f"{other_id}/clip.wav")
    assert stack.drive(other_id)["status"] == "completed"  # type: ignore[index]
    assert stack.client.delete(f"/jobs/{other_id}").json()["purged_at"]
    assert not blobs_under(stack, other_id)
