"""The OpenAI-compatible audio front through the real local stack, with the official `openai` SDK as
the client: API → a job → router → LID / Whisper workers with the bundled model → the answer in
each of OpenAI's response formats. A second stack with no workers and a one-second wait limit gives
the 504 with the job id to poll."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import openai
import pytest

from functions.api.openai_audio import JOB_ID_HEADER
from tests.e2e.conftest import AUDIO, RunningStack
from tests.support.wer import normalise, wer

pytestmark = [pytest.mark.model, pytest.mark.slow]

COUNTING = AUDIO / "en" / "kokoro-counting.wav"
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
"""Whisper writes them as words or as digits; either counts."""
MAX_WER = 0.25
"""Loose: each clip is transcribed once more per format, and the point here is the front, not the model."""


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    with start_stack(components=("api", "router", "lid", "whisper")) as running:
        yield running


def sdk(stack: RunningStack, *, api_key: str | None = None) -> openai.OpenAI:
    # No SDK retries: a 504 or a 401 must come back as it is, once.
    return openai.OpenAI(
        api_key=api_key or stack.env["SPEECHFLOW_API_KEY"],
        base_url=f"{stack.base_url}/v1",
        max_retries=0,
        timeout=180,
    )


@pytest.fixture(scope="module")
def client(stack: RunningStack) -> openai.OpenAI:
    return sdk(stack)


def words(text: str) -> list[str]:
    return normalise(text).split()


def numbers_heard(text: str) -> int:
    found = set(words(text))
    return sum(name in found or str(value) in found for value, name in enumerate(NUMBERS, start=1))


def test_json_with_a_language_is_the_transcript(client: openai.OpenAI) -> None:
    clip = AUDIO / "en" / "librivox-0870.wav"

    with clip.open("rb") as audio:
        result = client.audio.transcriptions.create(file=audio, model="whisper-1", language="en")

    assert wer(clip.with_suffix(".txt").read_text(), result.text) <= MAX_WER, result.text


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_and_subtitle_formats(client: openai.OpenAI, fmt: str) -> None:
    with COUNTING.open("rb") as audio:
        result = client.audio.transcriptions.create(file=audio, model="whisper-1", language="en", response_format=fmt)

    assert isinstance(result, str)
    assert numbers_heard(result) >= 8, result
    if fmt == "srt":
        assert result.startswith("1\n00:00:0") and " --> " in result
    elif fmt == "vtt":
        assert result.startswith("WEBVTT\n\n00:00:0")
    else:
        assert "-->" not in result


def test_verbose_json_without_a_language_finds_it_and_gives_words(client: openai.OpenAI, stack: RunningStack) -> None:
    clip = AUDIO / "en" / "librivox-0890.wav"

    with clip.open("rb") as audio:
        raw = client.audio.transcriptions.with_raw_response.create(
            file=audio,
            model="whisper-1",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            prompt="Dashwood",
        )
    result = raw.parse()

    assert result.language == "english"
    assert result.duration == pytest.approx(5.3, abs=0.3)
    assert wer(clip.with_suffix(".txt").read_text(), result.text) <= MAX_WER, result.text
    assert result.segments and result.segments[0].start >= 0.0 and result.segments[-1].end <= result.duration + 0.1
    assert result.words and len(result.words) >= 10
    assert all(word.start <= word.end for word in result.words)
    # An ordinary job behind it, owned by the same key (x-api-key on the stack's client), with LID first.
    job = stack.job(raw.headers[JOB_ID_HEADER])
    assert job["workflow_type"] == "full_pipeline" and job["detected_language"] == "eng"
    assert job["options"]["prompt"] == "Dashwood"
    assert job["options"]["openai"] == {
        "endpoint": "transcriptions",
        "model": "whisper-1",
        "response_format": "verbose_json",
        "temperature": 0.0,
    }
    listed = stack.client.get("/jobs", params={"limit": 100}).json()["items"]
    assert raw.headers[JOB_ID_HEADER] in {item["job_id"] for item in listed}


def test_possible_languages_narrow_identification_to_them(client: openai.OpenAI, stack: RunningStack) -> None:
    """`languages` (the SDK's field for the languages the audio may be in) reaches the LID step."""
    with (AUDIO / "fr" / "kokoro-pangrama.wav").open("rb") as audio:
        raw = client.audio.transcriptions.with_raw_response.create(
            file=audio, model="whisper-1", response_format="verbose_json", languages=["de", "fr", "nl"]
        )

    assert raw.parse().language == "french"
    job = stack.job(raw.headers[JOB_ID_HEADER])
    assert job["options"]["languages"] == ["deu", "fra", "nld"] and job["detected_language"] == "fra"
    lid = next(step for step in job["steps"] if step["step_type"] == "LID")
    assert lid["details"]["languages"] == ["deu", "fra", "nld"]
    assert stack.results(raw.headers[JOB_ID_HEADER]).json()["language"] == "fra"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks whisper-1's translations deprecated
def test_translation_is_english(client: openai.OpenAI) -> None:
    with (AUDIO / "fr" / "kokoro-comptage.wav").open("rb") as audio:
        result = client.audio.translations.create(file=audio, model="whisper-1", response_format="verbose_json")

    assert result.language == "english"
    assert numbers_heard(result.text) >= 6, result.text


def test_a_file_that_is_not_audio_is_a_400_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(file=("notes.wav", b"this is not audio at all"), model="whisper-1")

    error: dict[str, Any] = refused.value.body  # type: ignore[assignment]
    assert error["type"] == "invalid_request_error" and error["param"] == "file"
    assert "not an audio file" in error["message"] or "cannot be used" in error["message"]


def test_a_wrong_key_is_a_401_and_no_key_too(stack: RunningStack) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(stack, api_key="sk-not-a-speechflow-key").audio.transcriptions.create(
            file=("counting.wav", COUNTING.read_bytes()), model="whisper-1"
        )
    anonymous = httpx.post(
        f"{stack.base_url}/v1/audio/transcriptions",
        files={"file": ("c.wav", COUNTING.read_bytes(), "audio/wav")},
        data={"model": "whisper-1"},
        timeout=30,
    )

    assert refused.value.status_code == 401
    assert set(refused.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"


def test_past_the_wait_limit_the_answer_is_504_with_the_job_to_poll(
    start_stack: Callable[..., AbstractContextManager[RunningStack]],
) -> None:
    # No workers: the job cannot finish, so the one-second limit is what answers.
    with start_stack(components=("api",), env={"OPENAI_WAIT_SECONDS": "1"}) as idle:
        with pytest.raises(openai.APIStatusError) as timed_out:
            sdk(idle).audio.transcriptions.create(
                file=("counting.wav", COUNTING.read_bytes()), model="whisper-1", language="en"
            )

        error: dict[str, Any] = timed_out.value.body  # type: ignore[assignment]
        job_id = timed_out.value.response.headers[JOB_ID_HEADER]
        assert timed_out.value.status_code == 504
        assert error["code"] == "timeout" and error["job_id"] == job_id and f"/jobs/{job_id}" in error["message"]
        assert idle.job(job_id)["status"] == "queued"
