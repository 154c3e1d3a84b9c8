"""Batches without I/O: how many items a batch may have, which blobs of a container are its audio, and
the batch's status from its jobs' statuses (POST /batches, shared/jobs/batches.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Literal, get_args

from shared.domain.status import TERMINAL_STATUSES

MAX_BATCH_ITEMS = 1000
"""As Azure batch transcription: at most this many URLs in one request (or audio blobs in a container)."""

BatchStatus = Literal["pending_upload", "processing", "completed", "cancelled"]
BATCH_STATUSES: tuple[str, ...] = get_args(BatchStatus)

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".mp3", ".m4a", ".mp4", ".aac", ".flac", ".ogg", ".oga", ".opus", ".webm", ".wma", ".amr", ".aiff"}
)
"""What a blob's name says is audio (or a video with a sound track), when its content type does not."""
_AUDIO_CONTENT_TYPES = ("audio/", "video/")


def is_audio_blob(name: str, content_type: str | None) -> bool:
    """Whether a container's blob is an item of its batch: an audio (or video) content type, or a name
    that ends like audio when the content type says nothing useful (`application/octet-stream`, unset).
    A folder marker or a `.txt` beside the recordings is not an item."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind.startswith(_AUDIO_CONTENT_TYPES):
        return True
    if kind and kind not in ("application/octet-stream", "binary/octet-stream"):
        return False
    return PurePosixPath(name).suffix.lower() in AUDIO_EXTENSIONS


def batch_status(counts: Mapping[str, int], *, ended: bool, cancelled: bool) -> BatchStatus:
    """A batch's status from its jobs' counts by status: `completed` (or `cancelled`, when DELETE was
    asked for) once every job has ended; `pending_upload` while every job still waits for its upload;
    `processing` otherwise. `ended` is whether the batch has been closed (its webhook staged), so that the
    status and the webhook never disagree."""
    if ended:
        return "cancelled" if cancelled else "completed"
    live = {status: count for status, count in counts.items() if count}
    if live and set(live) == {"pending_upload"}:
        return "pending_upload"
    return "processing"


def all_ended(counts: Mapping[str, int]) -> bool:
    """Every job of the batch has ended (a batch has at least one job)."""
    total = sum(counts.values())
    return total > 0 and sum(count for status, count in counts.items() if status in TERMINAL_STATUSES) == total
