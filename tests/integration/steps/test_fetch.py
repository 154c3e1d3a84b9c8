"""audio_url on POST /jobs: the job is queued at once, and the FETCH step (shared/steps/fetch.py, run by
the registry's processor through the step consumer) brings the audio from a real HTTP server on this
machine (admitted by FETCH_ALLOWED_HOSTS) or from Azurite with a SAS, into the audio container; then
the stack's stub workers carry the job on. Failures: 404 and non-audio are permanent, a 500 is retried,
oversized files and redirects to internal addresses are refused."""

from __future__ import annotations

import io
import threading
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from shared.core.config import Settings
from shared.domain.messages import result_blob_path
from shared.domain.results import FetchedAudio
from shared.steps.runner import StepContext, processor_for
from shared.worker.component import BaseWorker
from tests.support.azurite import azurite_connection_string  # noqa: F401
from tests.support.pipeline import Stack, build_stack, silent_wav

AUDIO = silent_wav(1.5)


def stereo_wav(seconds: float = 1.0, sample_rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(b"\0\0\0\0" * round(seconds * sample_rate))
    return buffer.getvalue()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class AudioServer:
    """A plain HTTP server on 127.0.0.1: each path answers its queued replies in turn, the last one for good."""

    port: int
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    host_headers: list[str] = field(default_factory=list)

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def serve(self, path: str, *replies: Reply) -> str:
        self.replies[path] = list(replies)
        return self.url(path)


@pytest.fixture
def audio_server() -> Iterator[AudioServer]:
    server_state = AudioServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            server_state.hits[path] = server_state.hits.get(path, 0) + 1
            server_state.host_headers.append(self.headers.get("host", ""))
            queued = server_state.replies.get(path) or [Reply(404, b"no such file")]
            reply = queued.pop(0) if len(queued) > 1 else queued[0]
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *_args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_state
    server.shutdown()
    server.server_close()


class FetchWorker(BaseWorker):
    """The registry's FETCH processor on fetch-jobs, as the local host's fetch component runs it."""

    step_types: ClassVar[tuple[str, ...]] = ("FETCH",)
    receive_wait_seconds: ClassVar[float] = 0.0

    def process(self, step: StepContext) -> dict[str, Any]:
        processor = processor_for("FETCH")
        assert processor is not None
        return processor(step)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database (the happy path also runs on PostgreSQL, through `database_url`)."""
    from shared.core.db import migrate

    url = f"sqlite:///{tmp_path / 'speechflow.db'}"
    migrate(Settings(database_url=url, speechflow_home=tmp_path / "home"))
    return url


def make_stack(make_settings: Any, **overrides: Any) -> Stack:
    values: dict[str, Any] = {"lock_duration_seconds": 5, "retry_backoff_seconds": 0.05}
    values.update(overrides)
    values.setdefault("fetch_allowed_hosts", ["127.0.0.1"])
    stack = build_stack(make_settings(**values))
    stack.workers.append(FetchWorker(stack.settings, runtime=stack.runtime))
    return stack


@pytest.fixture
def stack(make_settings: Any, sqlite_url: str) -> Iterator[Stack]:
    built = make_stack(make_settings, database_url=sqlite_url)
    yield built
    built.client.close()
    built.runtime.close()


def create(stack: Stack, audio_url: str, workflow: str = "transcribe_only", **fields: Any) -> uuid.UUID:
    body = {"workflow_type": workflow, "audio_url": audio_url, **fields}
    if workflow == "transcribe_only":
        body.setdefault("source_language", "fra")
    response = stack.client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "queued"
    assert created["upload_url"] is None and created["upload_expires_at"] is None
    return uuid.UUID(created["job_id"])


def fetch_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = [step for step in job["steps"] if step["step_type"] == "FETCH"]
    return step


def test_audio_url_job_is_queued_and_fetched_into_the_audio_container(
    make_settings: Any, database_url: str, audio_server: AudioServer
) -> None:
    stack = make_stack(make_settings, database_url=database_url)
    try:
        check_fetched_into_the_audio_container(stack, audio_server)
    finally:
        stack.client.close()
        stack.runtime.close()


def check_fetched_into_the_audio_container(stack: Stack, audio_server: AudioServer) -> None:
    url = audio_server.serve("/calls/meeting%20one.wav", Reply(body=AUDIO, headers={"content-type": "audio/wav"}))
    job_id = create(stack, url + "?sig=secret-token", "full_pipeline")
    listed = stack.job(job_id)
    assert listed["status"] == "queued"
    assert listed["audio_filename"] == "meeting one.wav"
    assert listed["options"]["audio_url"] == url  # the query (a SAS) is never shown

    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed", job
    assert [step["step_type"] for step in job["steps"]][:2] == ["FETCH", "LID"]
    fetched = fetch_step(job)
    assert fetched["retry_count"] == 0
    assert fetched["details"]["url_host"] == "127.0.0.1"
    assert fetched["details"]["size_bytes"] == len(AUDIO)
    assert fetched["details"]["content_type"] == "audio/wav"
    assert fetched["details"]["duration"] == pytest.approx(1.5)
    assert "secret-token" not in str(job)

    blob = f"{job_id}/meeting one.wav"
    assert stack.runtime.blobs.get(stack.settings.audio_container, blob) == AUDIO
    stored = stack.runtime.blobs.get(stack.settings.results_container, result_blob_path(job_id, "FETCH"))
    result = FetchedAudio.model_validate_json(stored)
    assert (result.url_host, result.size_bytes, result.channels) == ("127.0.0.1", len(AUDIO), 1)
    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["transcript"]["text"] == "bonjour le monde"
    assert audio_server.hits["/calls/meeting%20one.wav"] == 1


def test_start_after_an_audio_url_create_is_a_conflict(stack: Stack, audio_server: AudioServer) -> None:
    job_id = create(stack, audio_server.serve("/a.wav", Reply(body=AUDIO)))
    response = stack.client.post(f"/jobs/{job_id}/start")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_a_404_fails_the_job_at_once_with_the_reason(stack: Stack, audio_server: AudioServer) -> None:
    job_id = create(stack, audio_server.url("/missing.wav"))
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "failed"
    step = fetch_step(job)
    assert step["retry_count"] == 0
    assert "404" in step["error_message"] and "127.0.0.1" in step["error_message"]
    assert "FETCH failed" in job["error_message"]
    assert [s["step_type"] for s in job["steps"]] == ["FETCH"]


@pytest.mark.parametrize("status", [403, 410])
def test_refused_or_gone_is_permanent(stack: Stack, audio_server: AudioServer, status: int) -> None:
    job_id = create(stack, audio_server.serve("/x.wav", Reply(status, b"nope")))
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "failed"
    assert fetch_step(job)["retry_count"] == 0
    assert str(status) in fetch_step(job)["error_message"]
    assert audio_server.hits["/x.wav"] == 1


def test_a_server_error_is_retried_and_then_succeeds(stack: Stack, audio_server: AudioServer) -> None:
    url = audio_server.serve("/flaky.wav", Reply(500, b"busy"), Reply(body=AUDIO))
    job_id = create(stack, url)
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed", job
    step = fetch_step(job)
    assert step["retry_count"] == 1 and step["status"] == "completed"
    assert audio_server.hits["/flaky.wav"] == 2
    assert stack.runtime.blobs.get(stack.settings.audio_container, f"{job_id}/flaky.wav") == AUDIO


def test_a_file_that_is_not_audio_fails_for_good(stack: Stack, audio_server: AudioServer) -> None:
    page = b"<html><body>Sign in to download</body></html>"
    job_id = create(stack, audio_server.serve("/clip.wav", Reply(body=page, headers={"content-type": "text/html"})))
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "failed"
    step = fetch_step(job)
    assert step["retry_count"] == 0
    assert "not usable audio" in step["error_message"]
    assert not stack.runtime.blobs.exists(stack.settings.audio_container, f"{job_id}/clip.wav")


def test_a_file_over_the_size_limit_fails_for_good(
    make_settings: Any, sqlite_url: str, audio_server: AudioServer
) -> None:
    stack = make_stack(make_settings, database_url=sqlite_url, max_upload_bytes=len(AUDIO) - 1)
    try:
        job_id = create(stack, audio_server.serve("/big.wav", Reply(body=AUDIO)))
        job = stack.drive(job_id)
        assert job is not None and job["status"] == "failed"
        step = fetch_step(job)
        assert step["retry_count"] == 0
        assert "larger than the maximum" in step["error_message"]
    finally:
        stack.client.close()
        stack.runtime.close()


def test_audio_longer_than_the_limit_fails_for_good(
    make_settings: Any, sqlite_url: str, audio_server: AudioServer
) -> None:
    stack = make_stack(make_settings, database_url=sqlite_url, max_audio_seconds=1.0)
    try:
        job_id = create(stack, audio_server.serve("/long.wav", Reply(body=AUDIO)))
        job = stack.drive(job_id)
        assert job is not None and job["status"] == "failed"
        assert "the maximum is 1 s" in fetch_step(job)["error_message"]
    finally:
        stack.client.close()
        stack.runtime.close()


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/clip.wav", "http://169.254.169.254/latest/meta-data/"])
def test_a_redirect_to_an_internal_address_is_refused(
    make_settings: Any, sqlite_url: str, audio_server: AudioServer, target: str
) -> None:
    # Only the name `localhost` is allowed: the redirect's target is checked on its own and refused.
    stack = make_stack(make_settings, database_url=sqlite_url, fetch_allowed_hosts=["localhost"])
    try:
        location = target.format(port=audio_server.port)
        audio_server.serve("/redirect", Reply(302, headers={"location": location}))
        audio_server.serve("/clip.wav", Reply(body=AUDIO))
        job_id = create(stack, audio_server.url("/redirect", host="localhost"))
        job = stack.drive(job_id)
        assert job is not None and job["status"] == "failed"
        step = fetch_step(job)
        assert step["retry_count"] == 0
        assert "a redirect from localhost was refused" in step["error_message"]
        assert audio_server.hits.get("/clip.wav") is None
    finally:
        stack.client.close()
        stack.runtime.close()


def test_redirects_are_followed_within_the_limit(stack: Stack, audio_server: AudioServer) -> None:
    audio_server.serve("/r1", Reply(301, headers={"location": "/r2"}))
    audio_server.serve("/r2", Reply(307, headers={"location": audio_server.url("/final.wav")}))
    audio_server.serve("/final.wav", Reply(body=AUDIO))
    job_id = create(stack, audio_server.url("/r1"))
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed", job
    assert fetch_step(job)["details"]["redirects"] == 2


def test_a_redirect_loop_stops_after_five_hops(stack: Stack, audio_server: AudioServer) -> None:
    audio_server.serve("/loop", Reply(302, headers={"location": "/loop"}))
    job = stack.drive(create(stack, audio_server.url("/loop")))
    assert job is not None and job["status"] == "failed"
    assert "more than 5 times" in fetch_step(job)["error_message"]
    assert audio_server.hits["/loop"] == 6


def test_split_channels_records_the_channel_count(stack: Stack, audio_server: AudioServer) -> None:
    job_id = create(stack, audio_server.serve("/call.wav", Reply(body=stereo_wav())), channels="split")
    job = stack.drive(job_id)
    # What comes after FETCH for split channels is the transcription's business; FETCH's part is the count.
    assert job is not None and fetch_step(job)["status"] == "completed", job
    assert job["options"]["channel_count"] == 2
    assert job["options"]["channels"] == "split"


def test_split_channels_refuses_a_one_channel_file(stack: Stack, audio_server: AudioServer) -> None:
    job_id = create(stack, audio_server.serve("/mono.wav", Reply(body=AUDIO)), channels="split")
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "failed"
    step = fetch_step(job)
    assert step["retry_count"] == 0
    assert "channels=split needs one channel per speaker" in step["error_message"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/clip.wav", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://10.0.0.7/clip.wav", "private"),
        ("http://audio.example.com/clip.wav", "https"),
        ("ftp://audio.example.com/clip.wav", "http(s)"),
    ],
)
def test_an_unsafe_audio_url_is_a_422_at_create(make_settings: Any, sqlite_url: str, url: str, message: str) -> None:
    stack = make_stack(make_settings, database_url=sqlite_url, fetch_allowed_hosts=[])
    try:
        body = {"workflow_type": "lid_only", "audio_url": url}
        response = stack.client.post("/jobs", json=body)
        assert response.status_code == 422, response.text
        assert message in response.json()["error"]["message"]
        assert stack.client.get("/jobs").json()["total"] == 0
    finally:
        stack.client.close()
        stack.runtime.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"workflow_type": "summarize_only", "source_language": "fra", "audio_filename": "notes.txt"},
            "only apply to audio workflows",
        ),
        ({"workflow_type": "lid_only", "audio_url": "not a url"}, "absolute http(s) URL"),
    ],
)
def test_audio_url_outside_audio_workflows_or_malformed_is_a_422(
    stack: Stack, body: dict[str, Any], message: str
) -> None:
    body = {"audio_url": "http://127.0.0.1/x.wav", **body}
    response = stack.client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]


@pytest.mark.azurite
def test_an_azure_blob_sas_url_is_fetched(stack: Stack, request: pytest.FixtureRequest) -> None:
    from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

    from tests.support.azurite import ACCOUNT_KEY, ACCOUNT_NAME

    service = BlobServiceClient.from_connection_string(request.getfixturevalue("azurite_connection_string"))
    container = f"incoming-{uuid.uuid4().hex[:8]}"
    service.create_container(container)
    blob = service.get_blob_client(container, "interview.wav")
    blob.upload_blob(AUDIO)
    sas = generate_blob_sas(
        ACCOUNT_NAME,
        container,
        "interview.wav",
        account_key=ACCOUNT_KEY,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(minutes=10),
    )
    job_id = create(stack, f"{blob.url}?{sas}")
    job = stack.drive(job_id)
    assert job is not None and job["status"] == "completed", job
    assert stack.runtime.blobs.get(stack.settings.audio_container, f"{job_id}/interview.wav") == AUDIO
    assert "sig=" not in str(job)

    # Without its SAS the same blob is refused by Azurite: a permanent failure that says so.
    refused = stack.drive(create(stack, blob.url))
    assert refused is not None and refused["status"] == "failed"
    assert "refused access" in fetch_step(refused)["error_message"]
    assert fetch_step(refused)["retry_count"] == 0


def test_the_fixture_server_is_what_the_tests_think(audio_server: AudioServer) -> None:
    # Guards the fixture: replies are served in turn, the last one for good.
    import httpx

    audio_server.serve("/seq", Reply(500), Reply(200, b"ok"))
    assert [httpx.get(audio_server.url("/seq")).status_code for _ in range(3)] == [500, 200, 200]
