"""Accepting audio: one set of rules for every way audio enters a job — an upload started with
`POST /jobs/{id}/start`, a file sent to the OpenAI front, a file the FETCH step downloads (and next, a
live session's recording). The file is within MAX_UPLOAD_BYTES, is audio PyAV can read, lasts a finite
time within MAX_AUDIO_SECONDS, and has a channel per speaker when the job splits channels.

A refusal is an `AudioRefused` (a PermanentError) with a code and a message naming the file as its
caller does ("the upload", "the audio at example.com"): the API answers 422 with them, FETCH fails its
step for good. An accepted file gives what the job records of it (`job_updates`).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared.core.config import Settings
from shared.core.errors import PermanentError
from shared.domain.models import Job
from shared.domain.options import JobOptions
from shared.domain.workflow import AUDIO_WORKFLOWS
from shared.engines.audio import AudioError, AudioInfo, probe
from shared.storage import BlobStore
from shared.storage.local import LocalBlobStore

RefusalCode = Literal["upload_too_large", "invalid_audio", "audio_too_long", "not_multichannel"]


class AudioRefused(PermanentError):
    """the audio cannot be accepted"""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AcceptedAudio:
    info: AudioInfo
    options: JobOptions

    def job_updates(self, stored_options: dict[str, Any] | None) -> dict[str, Any]:
        """The job's columns to set: its duration, and its channel count where it splits channels."""
        updates: dict[str, Any] = {"audio_duration_seconds": self.info.duration_seconds}
        if self.options.split_channels:
            updates["options"] = {**(stored_options or {}), "channel_count": self.info.channels}
        return updates


def check_size(size: int, *, settings: Settings) -> None:
    if size > settings.max_upload_bytes:
        raise AudioRefused(
            "upload_too_large", f"the upload is {size} bytes; the maximum is {settings.max_upload_bytes} bytes"
        )


def accept_audio(
    path: Path, *, settings: Settings, options: JobOptions, unusable: str, lasting: str, holding: str
) -> AcceptedAudio:
    """Probe the file and apply the rules. `unusable`, `lasting` and `holding` name the file in the
    refusals as the caller speaks of it: "the upload cannot be used", "the audio lasts", "the upload has"."""
    try:
        info = probe(path)
    except AudioError as error:
        raise AudioRefused("invalid_audio", f"{unusable}: {error}") from None
    duration = info.duration_seconds
    if duration <= 0:
        raise AudioRefused("invalid_audio", f"{unusable}: it holds no audio (0 s)")
    if not math.isfinite(duration) or duration > settings.max_audio_seconds:
        raise AudioRefused(
            "audio_too_long", f"{lasting} {duration:.0f} s; the maximum is {settings.max_audio_seconds:g} s"
        )
    if options.split_channels and info.channels < 2:
        raise AudioRefused(
            "not_multichannel", f"channels=split needs one channel per speaker; {holding} {info.channels} channel"
        )
    return AcceptedAudio(info=info, options=options)


def accept_upload(*, blobs: BlobStore, settings: Settings, job: Job) -> AcceptedAudio | None:
    """The rules applied to a job's uploaded file where it lies (None for a transcript upload, which is
    checked for size only). Runs before the job is queued, so a refused job stays pending_upload and the
    client can upload again to the same URL."""
    if job.audio_blob_path is None:
        return None
    container, blob = settings.audio_container, job.audio_blob_path
    check_size(blobs.size(container, blob), settings=settings)
    if job.workflow_type not in AUDIO_WORKFLOWS:
        return None
    names = {"unusable": "the upload cannot be used", "lasting": "the audio lasts", "holding": "the upload has"}
    options = JobOptions.of(job.options)
    if isinstance(blobs, LocalBlobStore):
        return accept_audio(blobs.path(container, blob), settings=settings, options=options, **names)
    # Other stores are probed from a local copy; the upload was already capped in size above.
    with tempfile.TemporaryDirectory(prefix="speechflow-probe-") as folder:
        local = Path(folder) / "upload"
        blobs.download_to(container, blob, local)
        return accept_audio(local, settings=settings, options=options, **names)
