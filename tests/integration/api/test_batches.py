"""POST/GET/DELETE /batches through the API over a real database (SQLite and PostgreSQL) and the SQL
queue, with the stack's stub workers and the FETCH step fetching from an HTTP server on this machine (and
from Azurite, for container_url): items become jobs of the key, a bad item fails alone, whole-request
problems are a 422 with nothing created, one signed batch.completed when every job has ended."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.core.config import Settings
from shared.domain.messages import JobEvent
from shared.domain.models import Job, WebhookDelivery
from shared.jobs.keys import create_key
from shared.jobs.retention import apply_retention
from shared.jobs.webhooks import deliver_due, verify, webhook_secret
from shared.worker.deadletters import handle_dead_letter
from tests.integration.steps.test_fetch import AUDIO, AudioServer, FetchWorker, Reply, audio_server  # noqa: F401
from tests.support.azurite import azurite_connection_string  # noqa: F401
from tests.support.pipeline import Stack, build_stack
from tests.support.receiver import Receiver, webhook_receiver


@pytest.fixture
def make_stack(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Stack]]:
    built: list[Stack] = []

    def build(**overrides: Any) -> Stack:
        values: dict[str, Any] = {"lock_duration_seconds": 5, "retry_backoff_seconds": 0.05}
        values.update(overrides)
        values.setdefault("fetch_allowed_hosts", ["127.0.0.1"])
        stack = build_stack(make_settings(database_url=database_url, **values))
        stack.workers.append(FetchWorker(stack.settings, runtime=stack.runtime))
        built.append(stack)
        return stack

    yield build
    for one in built:
        one.client.close()
        one.runtime.close()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def drive_batch(stack: Stack, batch_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """Pump until the batch has ended, then deliver its webhook."""
    for item in stack.client.get(f"/batches/{batch_id}/results").json()["items"]:
        stack.drive(uuid.UUID(item["job_id"]), timeout=timeout)
    deliver_due(stack.runtime)
    batch = stack.client.get(f"/batches/{batch_id}")
    assert batch.status_code == 200, batch.text
    return dict(batch.json())


def batch_webhooks(stack: Stack, receiver: Receiver) -> list[dict[str, Any]]:
    bodies = []
    for headers, body in receiver.requests:
        assert verify(webhook_secret(stack.settings), headers=headers, body=body)
        bodies.append(json.loads(body))
    return [body for body in bodies if body["type"] == "batch.completed"]


def test_items_become_jobs_a_bad_item_fails_alone_and_one_signed_webhook_ends_it(
    stack: Stack, request: pytest.FixtureRequest, receiver: Receiver
) -> None:
    server: AudioServer = request.getfixturevalue("audio_server")
    good = server.serve("/one.wav", Reply(body=AUDIO, headers={"content-type": "audio/wav"}))
    other = server.serve("/two.wav", Reply(body=AUDIO, headers={"content-type": "audio/wav"}))
    body = {
        "workflow_type": "transcribe_only",
        "source_language": "fr",
        "speaker_labels": False,
        "callback_url": receiver.url,
        "items": [
            {"audio_url": good + "?sig=secret-one"},
            {"audio_url": "https://10.1.2.3/private.wav"},  # a private address: refused alone
            {"audio_url": other, "source_language": "en"},  # its own language
            {"audio_url": "ftp://example.com/a.wav"},
        ],
    }
    created = stack.client.post("/batches", json=body)
    assert created.status_code == 201, created.text
    answer = created.json()
    assert len(answer["job_ids"]) == 4 and answer["status"] == "processing"
    assert [item["status"] for item in answer["items"]] == ["queued", "failed", "queued", "failed"]
    assert "private" in answer["items"][1]["error_message"] and "10.1.2.3" in answer["items"][1]["error_message"]
    assert "absolute http(s) URL" in answer["items"][3]["error_message"]
    # Each item is an ordinary job of the key, listed with the others, with the batch's and its own options.
    listed = {job["job_id"] for job in stack.client.get("/jobs").json()["items"]}
    assert listed == set(answer["job_ids"])
    assert stack.job(uuid.UUID(answer["job_ids"][2]))["source_language"] == "en"
    assert stack.job(uuid.UUID(answer["job_ids"][0]))["source_language"] == "fr"
    assert {stack.job(uuid.UUID(job_id))["batch_id"] for job_id in answer["job_ids"]} == {answer["batch_id"]}

    batch = drive_batch(stack, answer["batch_id"])
    assert batch["status"] == "completed" and batch["total"] == 4, batch
    assert batch["counts"]["completed"] == 2 and batch["counts"]["failed"] == 2
    assert batch["completed_at"] is not None
    assert [hook["event_type"] for hook in batch["webhooks"]] == ["batch.completed"]

    results = stack.client.get(f"/batches/{answer['batch_id']}/results").json()
    assert [item["job_id"] for item in results["items"]] == answer["job_ids"]
    assert results["items"][0]["audio_url"] == good  # never the SAS
    assert "secret-one" not in json.dumps(results) and "secret-one" not in json.dumps(batch)
    assert results["items"][0]["results_url"].endswith(f"/jobs/{answer['job_ids'][0]}/results")
    assert stack.client.get(results["items"][0]["results_url"].split("7071", 1)[-1]).status_code == 200

    hooks = batch_webhooks(stack, receiver)
    assert len(hooks) == 1, hooks
    assert hooks[0]["batch_id"] == answer["batch_id"] and hooks[0]["status"] == "completed"
    assert hooks[0]["counts"] == {"completed": 2, "failed": 2} and hooks[0]["total"] == 4
    # No job of the batch sends a webhook of its own, and a later pass stages nothing more.
    apply_retention(stack.runtime)
    deliver_due(stack.runtime)
    assert len(batch_webhooks(stack, receiver)) == 1 and len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"items": []}, "at least 1"),
        ({"items": [{"audio_url": "https://example.com/a.wav"}] * 1001}, "at most 1000"),
        ({}, "give items"),
        ({"items": [{"audio_url": "https://example.com/a.wav"}], "container_url": "https://a/b?s=1"}, "not both"),
        ({"items": [{"audio_url": "https://example.com/a.wav", "audio_filename": "a.wav"}]}, "items[0]"),
        ({"items": [{"audio_url": "https://example.com/a.wav"}], "audio_url": "https://example.com/b"}, "each item"),
        ({"items": [{"audio_url": "https://example.com/a.wav", "workflow_type": "lid_only"}]}, "Extra inputs"),
        ({"items": [{"audio_filename": "a.wav"}], "target_language": "zz"}, "'zz' is not a language"),
        ({"container_url": "https://example.com/calls?sv=1&sig=x"}, "Azure Blob Storage container"),
        ({"container_url": "https://acct.blob.core.windows.net.example.com/c?sig=x"}, "Azure Blob Storage container"),
        ({"container_url": "http://[::1/c?sig=x"}, "Azure Blob Storage container"),
    ],
    ids=[
        "none",
        "too-many",
        "neither",
        "both",
        "item-both",
        "batch-audio-url",
        "item-extra",
        "bad-language",
        "not-azure",
        "azure-lookalike",
        "malformed-container",
    ],
)
def test_a_whole_request_problem_is_a_422_and_creates_nothing(stack: Stack, body: dict[str, Any], message: str) -> None:
    response = stack.client.post("/batches", json={"workflow_type": "full_pipeline", **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and message in error["message"], error
    assert stack.client.get("/jobs").json()["total"] == 0


def test_upload_items_answer_upload_urls_and_delete_cancels_what_has_not_ended(
    stack: Stack, receiver: Receiver
) -> None:
    created = stack.client.post(
        "/batches",
        json={
            "workflow_type": "full_pipeline",
            "callback_url": receiver.url,
            "items": [{"audio_filename": "a.wav"}, {"audio_filename": "b.wav"}],
        },
    ).json()
    assert created["status"] == "pending_upload"
    first, second = created["items"]
    assert first["upload_url"] and second["upload_url"] and first["status"] == "pending_upload"
    put = stack.client.put(first["upload_url"], content=AUDIO, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201
    stack.start(uuid.UUID(first["job_id"]))
    assert stack.drive(uuid.UUID(first["job_id"]))["status"] == "completed"  # type: ignore[index]
    assert stack.client.get(f"/batches/{created['batch_id']}").json()["status"] == "processing"

    cancelled = stack.client.delete(f"/batches/{created['batch_id']}")
    assert cancelled.status_code == 200, cancelled.text
    state = cancelled.json()
    assert state["status"] == "cancelled" and state["cancel_requested_at"] is not None
    assert state["counts"]["completed"] == 1 and state["counts"]["cancelled"] == 1
    assert stack.job(uuid.UUID(second["job_id"]))["status"] == "cancelled"
    deliver_due(stack.runtime)
    (hook,) = batch_webhooks(stack, receiver)
    assert hook["status"] == "cancelled" and hook["counts"] == {"completed": 1, "cancelled": 1}
    # Deleting again changes nothing and sends nothing.
    again = stack.client.delete(f"/batches/{created['batch_id']}").json()
    assert again["status"] == "cancelled" and again["completed_at"] == state["completed_at"]
    deliver_due(stack.runtime)
    assert len(receiver.requests) == 1


def test_a_batch_of_another_key_does_not_exist_for_you(stack: Stack) -> None:
    created = stack.client.post(
        "/batches", json={"workflow_type": "lid_only", "items": [{"audio_filename": "a.wav"}]}
    ).json()
    with stack.runtime.sessions() as session, session.begin():
        other = {"x-api-key": create_key(session=session, name="other").key}
    for method, path in [
        ("GET", f"/batches/{created['batch_id']}"),
        ("GET", f"/batches/{created['batch_id']}/results"),
        ("DELETE", f"/batches/{created['batch_id']}"),
    ]:
        response = stack.client.request(method, path, headers=other)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert stack.job(uuid.UUID(created["job_ids"][0]))["status"] == "pending_upload", "another key cancelled nothing"


def test_a_batch_counts_as_its_items_against_the_rate_limit(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(rate_limit_per_minute=6.0, rate_limit_burst=10)
    items = [{"audio_filename": f"{index}.wav"} for index in range(4)]
    assert stack.client.post("/batches", json={"workflow_type": "lid_only", "items": items}).status_code == 201
    # 4 of 10 taken: a batch of 7 is refused with nothing created, one of 6 goes ahead.
    refused = stack.client.post("/batches", json={"workflow_type": "lid_only", "items": items + items[:3]})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    assert stack.client.post("/batches", json={"workflow_type": "lid_only", "items": items[:2]}).status_code == 201
    with stack.runtime.sessions() as session:
        assert session.query(Job).count() == 6


def test_a_batch_larger_than_the_burst_goes_ahead_on_a_full_bucket_and_leaves_it_owing(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(rate_limit_per_minute=60.0, rate_limit_burst=5)
    items = [{"audio_filename": f"{index}.wav"} for index in range(12)]
    assert stack.client.post("/batches", json={"workflow_type": "lid_only", "items": items}).status_code == 201
    after = stack.client.get("/jobs")
    assert after.status_code == 429 and int(after.headers["retry-after"]) >= 5  # 12 taken of 5: about 8 s owed


def test_the_retention_pass_closes_a_batch_left_open_once_and_only_once(stack: Stack, receiver: Receiver) -> None:
    created = stack.client.post(
        "/batches",
        json={"workflow_type": "lid_only", "callback_url": receiver.url, "items": [{"audio_filename": "a.wav"}]},
    ).json()
    # A job ended by a path that did not close its batch (none does; the sweep is the safety net).
    with stack.runtime.sessions() as session, session.begin():
        session.get(Job, uuid.UUID(created["job_ids"][0])).status = "failed"  # type: ignore[union-attr]
    assert stack.client.get(f"/batches/{created['batch_id']}").json()["status"] == "processing"
    apply_retention(stack.runtime)
    apply_retention(stack.runtime)
    deliver_due(stack.runtime)
    assert stack.client.get(f"/batches/{created['batch_id']}").json()["status"] == "completed"
    with stack.runtime.sessions() as session:
        rows = session.query(WebhookDelivery).filter(WebhookDelivery.batch_id == uuid.UUID(created["batch_id"])).all()
    assert len(rows) == 1 and rows[0].status == "delivered"
    assert len(batch_webhooks(stack, receiver)) == 1


def test_a_job_failed_by_the_dead_letter_consumer_and_one_cancelled_alone_end_the_batch(
    stack: Stack, receiver: Receiver
) -> None:
    created = stack.client.post(
        "/batches",
        json={
            "workflow_type": "lid_only",
            "callback_url": receiver.url,
            "items": [{"audio_filename": "a.wav"}, {"audio_filename": "b.wav"}],
        },
    ).json()
    first, second = (uuid.UUID(job_id) for job_id in created["job_ids"])
    assert stack.client.delete(f"/jobs/{first}").json()["status"] == "cancelled"
    assert stack.client.get(f"/batches/{created['batch_id']}").json()["status"] == "processing"
    put = stack.client.put(created["items"][1]["upload_url"], content=AUDIO, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201
    stack.start(second)
    event = JobEvent(job_id=second, kind="job_started")
    outcome = handle_dead_letter(
        stack.runtime,
        queue="job-events",
        body=event.model_dump_json(),
        reason="MaxDeliveryCountExceeded",
        description="x",
    )
    assert outcome == "job_failed"
    batch = stack.client.get(f"/batches/{created['batch_id']}").json()
    assert batch["status"] == "completed" and batch["counts"]["cancelled"] == 1 and batch["counts"]["failed"] == 1
    (hook,) = batch_webhooks(stack, receiver)  # tried at once by the consumer, after its commit
    assert hook["counts"] == {"cancelled": 1, "failed": 1}


@pytest.mark.azurite
def test_a_container_url_makes_an_item_of_each_audio_blob(stack: Stack, request: pytest.FixtureRequest) -> None:
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, ContentSettings, generate_container_sas

    from tests.support.azurite import ACCOUNT_KEY, ACCOUNT_NAME

    service = BlobServiceClient.from_connection_string(request.getfixturevalue("azurite_connection_string"))
    name = f"calls-{uuid.uuid4().hex[:8]}"
    container = service.create_container(name)
    container.upload_blob("b/second call.wav", AUDIO)
    container.upload_blob("a-first.mp3.wav", AUDIO, content_settings=ContentSettings(content_type="audio/wav"))
    container.upload_blob("notes.txt", b"not audio", content_settings=ContentSettings(content_type="text/plain"))

    def sas(container_name: str = name, **permissions: bool) -> str:
        return generate_container_sas(
            ACCOUNT_NAME,
            container_name,
            account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions(**permissions),
            expiry=datetime.now(UTC) + timedelta(minutes=10),
        )

    url = f"{container.url}?{sas(read=True, list=True)}"
    created = stack.client.post("/batches", json={"workflow_type": "lid_only", "container_url": url})
    assert created.status_code == 201, created.text
    answer = created.json()
    assert len(answer["job_ids"]) == 2 and [item["status"] for item in answer["items"]] == ["queued", "queued"]
    batch = drive_batch(stack, answer["batch_id"])
    assert batch["status"] == "completed" and batch["counts"]["completed"] == 2 and batch["source"] == "container"
    results = stack.client.get(f"/batches/{answer['batch_id']}/results").json()
    assert [item["audio_url"] for item in results["items"]] == [
        f"{container.url}/a-first.mp3.wav",
        f"{container.url}/b/second%20call.wav",
    ]
    assert [item["audio_filename"] for item in results["items"]] == ["a-first.mp3.wav", "second call.wav"]
    assert "sig=" not in json.dumps(results)

    # A SAS that may read but not list, a container with no audio, no SAS: the whole request is refused.
    read_only = stack.client.post(
        "/batches", json={"workflow_type": "lid_only", "container_url": f"{container.url}?{sas(read=True)}"}
    )
    assert read_only.status_code == 422 and read_only.json()["error"]["code"] == "container_refused"
    assert "list and read" in read_only.json()["error"]["message"]
    assert "sig=" not in read_only.text
    service.create_container(f"{name}-empty")
    empty = stack.client.post(
        "/batches",
        json={
            "workflow_type": "lid_only",
            "container_url": f"{container.url}-empty?{sas(f'{name}-empty', read=True, list=True)}",
        },
    )
    assert empty.status_code == 422 and "no audio blob" in empty.json()["error"]["message"]
    bare = stack.client.post("/batches", json={"workflow_type": "lid_only", "container_url": container.url})
    assert bare.status_code == 422 and "carries no SAS" in bare.json()["error"]["message"]
