"""`speechflow listen` against the running stack with its live component: a fixture clip streamed at 4×
real time through the API's /v1/realtime, the turns' transcripts printed as JSON lines, and the job the
session was recorded as completed with that transcript."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import REPO, RunningStack, free_port
from tests.support.wer import wer

pytestmark = [pytest.mark.slow, pytest.mark.model]

CLIP = Path("tests/fixtures/audio/en/librivox-0870.wav")
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    env = {"REALTIME_PORT": str(free_port()), "WHISPER_WORKERS": "1"}
    with start_stack(components=("api", "router", "whisper", "realtime"), env=env) as running:
        wait_live(running)
        yield running


def wait_live(stack: RunningStack, timeout: float = 120) -> None:
    url = stack.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    headers = {"Authorization": f"Bearer {stack.env['SPEECHFLOW_API_KEY']}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with connect(url, additional_headers=headers, open_timeout=5) as socket:
                if json.loads(socket.recv(timeout=10))["type"] == "session.created":
                    return
        except (InvalidStatus, OSError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"the live component did not answer within {timeout:.0f} s\n{stack.log_tail()}")


def speechflow(stack: RunningStack, *argv: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SPEECHFLOW_API_KEY", None)
    command = [sys.executable, "-m", "shared.cli", *argv, "--api", stack.base_url]
    command += ["--api-key", key or stack.env["SPEECHFLOW_API_KEY"]]
    return subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_listen_streams_a_file_and_prints_the_turns_and_the_job(stack: RunningStack) -> None:
    started = time.monotonic()
    run = speechflow(stack, "listen", str(CLIP), "--speed", "4", "--json")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr + stack.log_tail()
    events: list[dict[str, Any]] = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[0]["type"] == "session.created"
    finals = [event for event in events if event["type"] == COMPLETED]
    assert finals, [event["type"] for event in events]
    heard = " ".join(event["transcript"].strip() for event in finals)
    reference = (REPO / CLIP).with_suffix(".txt").read_text()
    assert wer(reference, heard) <= 0.25, heard
    for final in finals:
        deltas = [e["delta"] for e in events if e["type"].endswith(".delta") and e["item_id"] == final["item_id"]]
        assert "".join(deltas) == final["transcript"]
    # ~7 s of audio at 4×: paced, not dumped at once.
    assert elapsed >= 7 / 4 - 0.3

    job_id = run.stderr.strip().splitlines()[-1].removeprefix("job ").strip()
    assert job_id == events[0]["session"]["id"]
    job = stack.wait([job_id], timeout=120, poll=0.5)[job_id]
    assert job["status"] == "completed", job
    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["transcript"]["text"] == heard


def test_listen_shows_captions_and_the_job_id(stack: RunningStack) -> None:
    run = speechflow(stack, "listen", str(CLIP), "--speed", "4", "--language", "en")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[-1].startswith("job ") and len(lines[-1]) == len("job ") + 36
    assert any(line.startswith("[00:0") and "Dashwood" in line for line in lines[:-1]), run.stdout


def test_listen_with_a_wrong_key_is_refused_in_one_line(stack: RunningStack) -> None:
    run = speechflow(stack, "listen", str(CLIP), key="sfk_wrong_key")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: librivox-0870.wav: the live endpoint refused the session (401): an API key or a live client "
        "secret is required and must be valid"
    ]
