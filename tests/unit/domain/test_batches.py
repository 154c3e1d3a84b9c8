"""The pure rules of batches: which blobs of a container are items, and a batch's status."""

from __future__ import annotations

import pytest

from shared.domain.batches import all_ended, batch_status, is_audio_blob


@pytest.mark.parametrize(
    ("name", "content_type", "audio"),
    [
        ("call.wav", "audio/wav", True),
        ("call", "audio/mpeg; charset=binary", True),
        ("talk.mp4", "video/mp4", True),
        ("CALL.MP3", None, True),  # no content type: the name decides
        ("call.flac", "application/octet-stream", True),
        ("notes.txt", "text/plain", False),
        ("call.wav", "text/plain", False),  # a content type that says otherwise wins over the name
        ("folder/", None, False),
        ("transcript.json", "application/octet-stream", False),
    ],
)
def test_an_item_is_an_audio_or_video_blob(name: str, content_type: str | None, audio: bool) -> None:
    assert is_audio_blob(name, content_type) is audio


def test_the_status_follows_the_jobs_until_the_batch_is_closed() -> None:
    assert batch_status({"pending_upload": 3}, ended=False, cancelled=False) == "pending_upload"
    assert batch_status({"pending_upload": 2, "queued": 1}, ended=False, cancelled=False) == "processing"
    assert batch_status({"pending_upload": 1, "failed": 1}, ended=False, cancelled=False) == "processing"
    # Every job ended but the batch not yet closed (its webhook not yet staged): still processing.
    assert batch_status({"completed": 2}, ended=False, cancelled=False) == "processing"
    assert batch_status({"completed": 1, "failed": 1}, ended=True, cancelled=False) == "completed"
    assert batch_status({"completed": 1, "cancelled": 1}, ended=True, cancelled=True) == "cancelled"


def test_all_ended_needs_every_job_terminal_and_at_least_one() -> None:
    assert all_ended({"completed": 1, "partial_complete": 1, "failed": 1, "cancelled": 1})
    assert not all_ended({"completed": 3, "processing": 1})
    assert not all_ended({"completed": 3, "pending_upload": 1})
    assert not all_ended({})
