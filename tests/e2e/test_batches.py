"""A batch through the real local stack (`python -m shared.hosting up --only api router fetch whisper
webhooks`): two fixture clips uploaded through the batch's upload URLs, one fetched from an HTTP server on
this machine, one refused item; the batch ends with every transcript readable from its results listing,
and the webhook dispatcher sends one batch.completed whose signature verifies."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest

from shared.jobs.webhooks import verify
from tests.e2e.conftest import AUDIO, RunningStack
from tests.support.receiver import Receiver, webhook_receiver

pytestmark = [pytest.mark.model, pytest.mark.slow]

SECRET = "whsec_" + "YmF0Y2gtd2ViaG9vay1zZWNyZXQtZm9yLXRlc3Rz"
UPLOADED = ("en/kokoro-hello_world.wav", "en/kokoro-quick_brown_fox.wav")
FETCHED = "fr/kokoro-bonjour_monde.wav"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    env = {"FETCH_ALLOWED_HOSTS": "127.0.0.1", "CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_SECRET": SECRET}
    with start_stack(components=("api", "router", "fetch", "whisper", "webhooks"), env=env) as up:
        yield up


def test_a_batch_runs_through_the_stack_and_reports_once(
    stack: RunningStack, clip_server: str, receiver: Receiver
) -> None:
    items: list[dict[str, Any]] = [{"audio_filename": name.split("/")[1]} for name in UPLOADED]
    items += [
        {"audio_url": f"{clip_server}/{FETCHED}?token=private", "source_language": "fr"},
        {"audio_url": "https://169.254.169.254/latest/meta-data"},
    ]
    created = stack.client.post(
        "/batches",
        json={
            "workflow_type": "transcribe_only",
            "source_language": "en",
            "callback_url": receiver.url,
            "items": items,
        },
    )
    assert created.status_code == 201, created.text
    batch = created.json()
    assert [item["status"] for item in batch["items"]] == ["pending_upload", "pending_upload", "queued", "failed"]
    for name, item in zip(UPLOADED, batch["items"], strict=False):
        put = httpx.put(
            item["upload_url"], content=(AUDIO / name).read_bytes(), headers={"x-ms-blob-type": "BlockBlob"}, timeout=30
        )
        assert put.status_code == 201, put.text
        assert stack.start(item["job_id"]).status_code == 202

    state: dict[str, Any] = {}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = stack.client.get(f"/batches/{batch['batch_id']}").json()
        if state["status"] == "completed":
            break
        time.sleep(0.5)
    assert state["status"] == "completed", f"{state}\n{stack.log_tail()}"
    assert state["counts"]["completed"] == 3 and state["counts"]["failed"] == 1

    listing = stack.client.get(f"/batches/{batch['batch_id']}/results").json()
    assert [item["job_id"] for item in listing["items"]] == batch["job_ids"]
    assert listing["items"][2]["audio_url"] == f"{clip_server}/{FETCHED}"
    texts = []
    for item in listing["items"][:3]:
        results = stack.client.get(item["results_url"].removeprefix(stack.base_url))
        assert results.status_code == 200, results.text
        texts.append(results.json()["transcript"]["text"].lower())
    assert "hello" in texts[0] and "fox" in texts[1] and "bonjour" in texts[2], texts
    assert "169.254.169.254" in listing["items"][3]["error_message"]

    deadline = time.monotonic() + 30
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # room for a second delivery, which must not come
    assert len(receiver.requests) == 1, receiver.requests
    headers, body = receiver.requests[0]
    assert verify(SECRET, headers=headers, body=body)
    event = json.loads(body)
    assert event["type"] == "batch.completed" and event["batch_id"] == batch["batch_id"]
    assert event["counts"] == {"completed": 3, "failed": 1} and event["status"] == "completed"
