"""GET /jobs/{id}/redacted-audio: the WAV the REDACT_AUDIO step made (shared/steps/redact_audio.py),
streamed from blob storage through a temporary file so that a long recording is never held in memory."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from functions.api.results import ResultUnavailable
from shared.core.errors import BlobNotFound
from shared.domain.messages import result_blob_path
from shared.domain.models import Job
from shared.domain.options import JobOptions
from shared.domain.status import TERMINAL_STATUSES
from shared.jobs.store import step_of
from shared.runtime import Runtime
from shared.steps.redact_audio import WAV_EXTENSION

STEP = "REDACT_AUDIO"


def redacted_audio_path(job: Job) -> str:
    return result_blob_path(job.id, STEP, WAV_EXTENSION)


def redacted_audio_response(runtime: Runtime, job: Job) -> FileResponse:
    """The redacted WAV; ResultUnavailable: 404 not asked for, 410 deleted (purge or audio retention),
    409 not made yet (or its making failed for good, with the reason)."""
    if not JobOptions.of(job.options).redact_pii_audio:
        raise ResultUnavailable(404, "not_requested", "this job was not created with redact_pii_audio: true")
    if job.purge_requested_at is not None:
        when = f"at {job.purged_at.isoformat()}" if job.purged_at else "(purge in progress)"
        raise ResultUnavailable(410, "purged", f"job {job.id}'s data was deleted {when}")
    if job.audio_deleted_at is not None:
        raise ResultUnavailable(
            410,
            "audio_deleted",
            f"the redacted audio was deleted with the upload at {job.audio_deleted_at.isoformat()}",
        )
    step = step_of(job, STEP)
    if step is None or step.status != "completed":
        if step is not None and step.status == "failed" and (not step.retryable or job.status in TERMINAL_STATUSES):
            raise ResultUnavailable(409, "redaction_failed", f"the audio could not be redacted: {step.error_message}")
        if job.status in TERMINAL_STATUSES:
            raise ResultUnavailable(409, "not_available", f"job is {job.status}; no redacted audio was made")
        raise ResultUnavailable(409, "not_ready", f"job is {job.status}; the redacted audio is not ready yet")
    folder = Path(tempfile.mkdtemp(prefix="speechflow-redacted-"))
    path = folder / f"{job.id}-redacted.wav"
    try:
        runtime.blobs.download_to(runtime.settings.results_container, redacted_audio_path(job), path)
    except BlobNotFound:
        shutil.rmtree(folder, ignore_errors=True)
        raise ResultUnavailable(410, "deleted", "the redacted audio is no longer stored") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        path,
        media_type="audio/wav",
        filename=path.name,
        content_disposition_type="attachment",
        background=BackgroundTask(_remove, folder),
    )


def _remove(folder: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)
