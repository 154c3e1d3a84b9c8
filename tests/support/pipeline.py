"""A whole stack in one test process: the API (TestClient), the router pump and workers defined by
the tests, over a real database, the SQL queue and the local blob folder. `drive()` turns the crank
until the job is terminal, one message at a time, deterministically."""

from __future__ import annotations

import io
import time
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi.testclient import TestClient
from pydantic import SecretStr

from functions.api import create_app
from shared.core.config import Settings
from shared.core.errors import PermanentError, TransientError
from shared.domain.results import Transcript
from shared.hosting.host import Pump
from shared.runtime import Runtime
from shared.steps.inputs import read_result
from shared.steps.runner import StepContext
from shared.steps.runner import processor_for as processor_for_registry
from shared.worker.component import BaseWorker
from shared.worker.router import route_event, route_events

TERMINAL = {"completed", "partial_complete", "failed", "cancelled"}
Behaviour = Callable[[StepContext], dict[str, Any]]
API_KEY = "test-bootstrap-key-0123456789abcdef"
"""The stack's bootstrap key (SPEECHFLOW_API_KEY); its client sends it on every request."""


def silent_wav(seconds: float = 0.5, sample_rate: int = 16000) -> bytes:
    """A small valid WAV: the API probes audio uploads before it queues the job."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(b"\0\0" * round(seconds * sample_rate))
    return buffer.getvalue()


TINY_WAV = silent_wav()


def fake_transcript(language: str) -> dict[str, Any]:
    words = [
        {"start": 0.0, "end": 0.4, "word": " bonjour", "probability": 0.9},
        {"start": 0.5, "end": 0.9, "word": " le", "probability": 0.8},
        {"start": 1.0, "end": 1.6, "word": " monde", "probability": 0.95},
    ]
    return {
        "language": language,
        "text": "bonjour le monde",
        "segments": [{"start": 0.0, "end": 1.6, "text": "bonjour le monde", "words": words}],
    }


class StubLidWorker(BaseWorker):
    step_types: ClassVar[tuple[str, ...]] = ("LID",)
    receive_wait_seconds: ClassVar[float] = 0.0
    language = "fra"

    def process(self, step: StepContext) -> dict[str, Any]:
        with step.input_file() as path:
            assert path.stat().st_size > 0
        step.job_updates.update(detected_language=self.language, language_confidence=0.97)
        return {"language": self.language, "confidence": 0.97}


class StubTranscribeWorker(BaseWorker):
    step_types: ClassVar[tuple[str, ...]] = ("TRANSCRIBE",)
    receive_wait_seconds: ClassVar[float] = 0.0

    def process(self, step: StepContext) -> dict[str, Any]:
        step.report_progress(0.5)
        step.details.update(model="test", device="cpu")
        return fake_transcript(step.job.language or "und")


class StubAiWorker(BaseWorker):
    step_types: ClassVar[tuple[str, ...]] = ("TRANSLATE", "SUMMARIZE")
    receive_wait_seconds: ClassVar[float] = 0.0

    def process(self, step: StepContext) -> dict[str, Any]:
        source_job = step.job.source_job_id or step.job.id
        transcript = read_result(step, "TRANSCRIBE", Transcript, job_id=source_job)
        if step.step_type == "TRANSLATE":
            first = transcript.segments[0].model_dump(mode="json", exclude_none=True)
            return {"text": "hello the world", "segments": [{**first, "text": "hello the world"}]}
        return {"summary": f"A greeting: {transcript.text}", "key_points": ["greeting"]}


@dataclass
class Stack:
    settings: Settings
    runtime: Runtime
    client: TestClient
    workers: list[BaseWorker]
    router: Pump
    behaviours: dict[str, list[Behaviour]] = field(default_factory=dict)
    """Per step type, behaviours consumed one per processed message before the default one."""

    def submit(self, workflow: str, *, upload: bytes | None = TINY_WAV, **fields: Any) -> uuid.UUID:
        body = {"workflow_type": workflow, **fields}
        if upload is not None or "audio_filename" in fields:
            body.setdefault("audio_filename", "clip.wav")
        response = self.client.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        if upload is not None:
            put = self.client.put(created["upload_url"], content=upload, headers={"x-ms-blob-type": "BlockBlob"})
            assert put.status_code == 201, put.text
        return uuid.UUID(created["job_id"])

    def start(self, job_id: uuid.UUID) -> None:
        response = self.client.post(f"/jobs/{job_id}/start")
        assert response.status_code == 202, response.text

    def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        response = self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def drive(self, job_id: uuid.UUID | None = None, *, timeout: float = 30.0) -> dict[str, Any] | None:
        """Pump the router and every worker until the job is terminal (or the queues are idle)."""
        deadline = time.monotonic() + timeout
        idle_rounds = 0
        while time.monotonic() < deadline:
            moved = self.router.poll_once(max_wait=0.0)
            for worker in self.workers:
                moved = worker.poll_once() or moved
            if job_id is not None and self.job(job_id)["status"] in TERMINAL:
                return self.job(job_id)
            idle_rounds = 0 if moved else idle_rounds + 1
            if job_id is None and idle_rounds > 3:
                return None
            if not moved:
                time.sleep(0.02)  # a retry's scheduled message becomes visible later
        raise AssertionError(f"job {job_id} not terminal after {timeout}s: {job_id and self.job(job_id)}")


def with_behaviours(worker: BaseWorker, behaviours: list[Behaviour]) -> None:
    """Make the worker run these behaviours for its next messages, then its own process()."""
    original = worker.process

    def process(step: StepContext) -> dict[str, Any]:
        if behaviours:
            return behaviours.pop(0)(step)
        return original(step)

    worker.process = process  # type: ignore[method-assign]


def transient(_step: StepContext) -> dict[str, Any]:
    raise TransientError("the model server is busy")


def permanent(_step: StepContext) -> dict[str, Any]:
    raise PermanentError("not an audio file")


def build_stack(settings: Settings) -> Stack:
    # Unless the test says otherwise: authenticate with a bootstrap key, let callbacks reach the
    # test's own receiver on this machine, and do not rate-limit drive()'s polling.
    defaults: dict[str, Any] = {
        "api_key": SecretStr(API_KEY),
        "callback_allowed_hosts": ["127.0.0.1", "localhost"],
        "rate_limit_per_minute": 0.0,
    }
    settings = settings.model_copy(
        update={name: value for name, value in defaults.items() if name not in settings.model_fields_set}
    )
    runtime = Runtime(settings)
    runtime.blobs.ensure_containers()
    client = TestClient(create_app(settings, runtime=runtime), headers={"x-api-key": API_KEY})
    workers: list[BaseWorker] = [
        StubLidWorker(settings, runtime=runtime),
        StubTranscribeWorker(settings, runtime=runtime),
        StubAiWorker(settings, runtime=runtime),
    ]
    stack = Stack(
        settings=settings,
        runtime=runtime,
        client=client,
        workers=workers,
        router=Pump(runtime, settings.job_events_queue, route_event, batch_handler=route_events),
    )
    transcribe = workers[1]
    original = transcribe.processor_for

    def processor_for(step_type: str) -> Callable[[StepContext], dict[str, Any]] | None:
        # Offline, the registry routes translation from audio to the Whisper workers' queue: the stub
        # Whisper worker passes it to whatever the test put in the AI worker's place.
        if step_type == "TRANSLATE":
            ai = stack.workers[2]
            process = getattr(ai, "process", None)
            return process if process is not None else processor_for_registry(step_type)
        return original(step_type)

    transcribe.processor_for = processor_for  # type: ignore[method-assign]
    return stack
