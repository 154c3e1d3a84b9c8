"""TRANSLATE and SUMMARIZE through the whole stack (API, router, the azure-ai-jobs handler behind the
local host's pump) on a real database: translate_only and summarize_only from an uploaded transcript
and from source_job_id, errors of the text model on the step, and full_pipeline on the French,
Mandarin and English fixture clips with the real LID and Whisper workers and the offline default."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.azure_ai import handle_step_message
from shared.core.config import LlmSettings, Settings, WhisperSettings
from shared.core.db import migrate
from shared.hosting.host import Pump
from shared.worker.component import worker_for
from tests.support.fake_openai import DEPLOYMENT, FakeOpenAI, content_filter_error, serve_fake_openai
from tests.support.pipeline import Stack, build_stack, fake_transcript

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"


class AzureAiPump:
    """The local host's azure-ai-jobs pump, polled by Stack.drive like a worker."""

    def __init__(self, stack: Stack) -> None:
        self._pump = Pump(stack.runtime, stack.settings.azure_ai_queue, handle_step_message)

    def poll_once(self) -> bool:
        return self._pump.poll_once(max_wait=0.0)


def stack_with_handler(settings: Settings) -> Stack:
    stack = build_stack(settings)
    stack.workers[2] = AzureAiPump(stack)  # type: ignore[call-overload]
    return stack


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with serve_fake_openai() as server:
        yield server


def azure_llm(fake: FakeOpenAI) -> LlmSettings:
    return LlmSettings.model_validate(
        {
            "AZURE_OPENAI_ENDPOINT": fake.url,
            "AZURE_OPENAI_API_KEY": fake.api_key,
            "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT,
            "LLM_TIMEOUT_SECONDS": 5,
        }
    )


@pytest.fixture
def make_stack(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Stack]]:
    built: list[Stack] = []

    def build(**overrides: Any) -> Stack:
        settings = make_settings(database_url=database_url, lock_duration_seconds=5, **overrides)
        stack = stack_with_handler(settings)
        built.append(stack)
        return stack

    yield build
    for stack in built:
        stack.client.close()
        stack.runtime.close()


def steps_by_type(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step_type"]: step for step in job["steps"]}


def run(stack: Stack, workflow: str, **fields: Any) -> tuple[uuid.UUID, dict[str, Any]]:
    job_id = stack.submit(workflow, **fields)
    stack.start(job_id)
    job = stack.drive(job_id)
    assert job is not None
    return job_id, job


TRANSCRIPT = {
    "language": "fra",
    "text": "Bonjour le monde. Un deux trois.",
    "segments": [
        {"start": 0.0, "end": 1.5, "text": "Bonjour le monde.", "words": []},
        {"start": 1.5, "end": 3.25, "text": "Un deux trois.", "words": []},
    ],
}


def test_translate_only_from_uploaded_transcript_json(make_stack: Callable[..., Stack], fake: FakeOpenAI) -> None:
    stack = make_stack(llm=azure_llm(fake))
    upload = json.dumps(TRANSCRIPT).encode()
    job_id, job = run(stack, "translate_only", upload=upload, audio_filename="t.json", source_language="fra")

    assert job["status"] == "completed", job
    step = steps_by_type(job)["TRANSLATE"]
    assert step["details"]["engine"] == "azure-openai"
    assert step["details"]["model"] == DEPLOYMENT
    assert step["details"]["usage"] == {"requests": 1, "prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}
    translation = stack.client.get(f"/jobs/{job_id}/results").json()["translation"]
    assert translation["text"] == "[en] Bonjour le monde. [en] Un deux trois."
    assert [(s["start"], s["end"]) for s in translation["segments"]] == [(0.0, 1.5), (1.5, 3.25)]
    srt = stack.client.get(f"/jobs/{job_id}/results", params={"format": "srt", "part": "translation"})
    assert srt.status_code == 200
    assert "00:00:01,500 --> 00:00:03,250\n[en] Un deux trois." in srt.text


def test_summarize_only_from_uploaded_plain_text_offline(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    text = (
        "The council approved the new budget for public transport.\n"
        "Buses will run every ten minutes under the new transport budget.\n"
        "The weather was sunny.\n"
        "The transport budget also pays for two new tram lines.\n"
    )
    job_id, job = run(stack, "summarize_only", upload=text.encode(), audio_filename="notes.txt", source_language="eng")

    assert job["status"] == "completed", job
    assert steps_by_type(job)["SUMMARIZE"]["details"]["engine"] == "extractive"
    summary = stack.client.get(f"/jobs/{job_id}/results").json()["summary"]
    assert "budget" in summary["summary"]
    assert summary["key_points"] and all(point in text for point in summary["key_points"])


def test_translate_and_summarize_from_source_job(make_stack: Callable[..., Stack], fake: FakeOpenAI) -> None:
    stack = make_stack(llm=azure_llm(fake))
    source, job = run(stack, "transcribe_only", source_language="fra")
    assert job["status"] == "completed"
    expected = fake_transcript("fra")

    for workflow in ("translate_only", "summarize_only"):
        response = stack.client.post(
            "/jobs", json={"workflow_type": workflow, "source_language": "fra", "source_job_id": str(source)}
        )
        assert response.status_code == 201, response.text
        job_id = uuid.UUID(response.json()["job_id"])
        stack.start(job_id)
        finished = stack.drive(job_id)
        assert finished is not None and finished["status"] == "completed", finished
        results = stack.client.get(f"/jobs/{job_id}/results").json()
        if workflow == "translate_only":
            [segment] = results["translation"]["segments"]
            assert (segment["start"], segment["end"]) == (0.0, 1.6)
            assert segment["text"] == f"[en] {expected['segments'][0]['text']}"
        else:
            assert results["summary"]["summary"] == "Summary: " + expected["text"]
            assert results["summary"]["key_points"] == ["first point", "second point"]


def test_content_filter_fails_the_step_at_once_with_the_service_message(
    make_stack: Callable[..., Stack], fake: FakeOpenAI
) -> None:
    stack = make_stack(llm=azure_llm(fake))
    fake.script.append(content_filter_error())
    upload = json.dumps(TRANSCRIPT).encode()
    _job_id, job = run(stack, "translate_only", upload=upload, audio_filename="t.json", source_language="fra")

    assert job["status"] == "failed"
    step = steps_by_type(job)["TRANSLATE"]
    assert step["status"] == "failed" and step["retry_count"] == 0
    assert "content management policy" in step["error_message"]
    assert len(fake.requests) == 1


def test_offline_text_translation_without_audio_fails_clearly(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    upload = json.dumps(TRANSCRIPT).encode()
    _job_id, job = run(stack, "translate_only", upload=upload, audio_filename="t.json", source_language="fra")

    assert job["status"] == "failed"
    assert "AZURE_OPENAI_ENDPOINT or OPENAI_BASE_URL" in steps_by_type(job)["TRANSLATE"]["error_message"]


def test_malformed_message_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="malformed step message"):
        handle_step_message(None, "{not json")  # type: ignore[arg-type]


# --- full_pipeline on the fixture clips, real models, offline default


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def speech_stack(tmp_path: Path, model_cache: Path) -> Iterator[Stack]:
    url = f"sqlite:///{tmp_path / 'speechflow.db'}"
    settings = Settings(
        database_url=url,
        speechflow_home=tmp_path / "home",
        lock_duration_seconds=10,
        retry_backoff_seconds=0.05,
        whisper=WhisperSettings(model_cache_dir=model_cache),
        llm=LlmSettings.model_validate({"LLM_BACKEND": "offline"}),
    )
    migrate(settings)
    stack = stack_with_handler(settings)
    stack.workers[0] = worker_for(settings, "lid", runtime=stack.runtime)
    stack.workers[1] = worker_for(settings, "whisper", runtime=stack.runtime)
    yield stack
    stack.client.close()
    stack.runtime.close()


@pytest.mark.model
@pytest.mark.parametrize(
    ("clip", "words"),
    [("fr/kokoro-pangrama.wav", {"whisky", "whiskey", "judge"}), ("zh/kokoro-nihao_shijie.wav", {"hello", "world"})],
)
def test_full_pipeline_translates_and_summarizes_foreign_speech(
    speech_stack: Stack, clip: str, words: set[str]
) -> None:
    job_id, job = run(speech_stack, "full_pipeline", upload=(AUDIO / clip).read_bytes())

    assert job["status"] == "completed", job
    steps = steps_by_type(job)
    assert steps["TRANSLATE"]["details"]["engine"] == "whisper-translate"
    assert steps["SUMMARIZE"]["details"]["engine"] == "extractive"
    results = speech_stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["language"] not in (None, "eng")
    assert results["transcript"]["text"]
    translation = results["translation"]
    assert translation["text"].strip()
    assert words & set(translation["text"].lower().replace(",", " ").replace(".", " ").split())
    transcript_timings = [(s["start"], s["end"]) for s in results["transcript"]["segments"]]
    assert [(s["start"], s["end"]) for s in translation["segments"]] == transcript_timings
    assert results["summary"]["summary"].strip() and results["summary"]["key_points"]
    assert (
        results["summary"]["summary"] in translation["text"]
        or results["summary"]["key_points"][0] in translation["text"]
    )


@pytest.mark.model
def test_full_pipeline_on_english_skips_translation(speech_stack: Stack) -> None:
    job_id, job = run(speech_stack, "full_pipeline", upload=(AUDIO / "en" / "kokoro-hello_world.wav").read_bytes())

    assert job["status"] == "completed", job
    assert steps_by_type(job)["TRANSLATE"]["details"]["skipped"] is True
    results = speech_stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["language"] == "eng"
    assert results["translation"] is None
    assert "hello" in results["summary"]["summary"].lower()
    assert results["summary"]["key_points"]
