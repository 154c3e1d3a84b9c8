"""audio_url through the real local stack (`python -m shared.hosting up --only api router fetch lid`): the
fetch component downloads a fixture clip from an HTTP server on this machine (admitted by
FETCH_ALLOWED_HOSTS), the LID worker identifies its language from the blob FETCH wrote, all over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from tests.e2e.conftest import AUDIO, RunningStack

pytestmark = [pytest.mark.model, pytest.mark.slow]

CLIP = "fr/kokoro-bonjour_monde.wav"


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    with start_stack(components=("api", "router", "fetch", "lid"), env={"FETCH_ALLOWED_HOSTS": "127.0.0.1"}) as up:
        yield up


def test_a_job_from_an_audio_url_runs_through_the_stack(stack: RunningStack, clip_server: str) -> None:
    assert "fetch" in stack.children().values()
    created = stack.client.post(
        "/jobs", json={"workflow_type": "lid_only", "audio_url": f"{clip_server}/{CLIP}?token=private"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "queued" and created.json()["upload_url"] is None
    missing = stack.client.post("/jobs", json={"workflow_type": "lid_only", "audio_url": f"{clip_server}/none.wav"})
    assert missing.status_code == 201, missing.text

    finished = stack.wait([created.json()["job_id"], missing.json()["job_id"]], timeout=120)
    job = finished[created.json()["job_id"]]
    assert job["status"] == "completed", job
    assert [step["step_type"] for step in job["steps"]] == ["FETCH", "LID"]
    assert job["detected_language"] == "fra"
    fetch = job["steps"][0]["details"]
    assert fetch["size_bytes"] == (AUDIO / CLIP).stat().st_size
    assert fetch["url_host"] == "127.0.0.1"
    assert "private" not in str(job)

    failed = finished[missing.json()["job_id"]]
    assert failed["status"] == "failed"
    assert "404" in failed["steps"][0]["error_message"]
    assert "token" not in stack.log_path.read_text(errors="replace")  # the query never reaches the logs
