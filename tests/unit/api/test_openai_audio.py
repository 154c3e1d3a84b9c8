"""The OpenAI-compatible audio front's conversions, without a stack: the form to a job's settings, the
wait's decision, and a transcript to each of OpenAI's response formats and its error shape."""

from __future__ import annotations

import asyncio
import io
import json
import math
import uuid
from typing import Any

import pytest
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, Headers, UploadFile

from functions.api.openai_audio import (
    JOB_ID_HEADER,
    WHISPER_LANGUAGE_NAMES,
    AudioRequest,
    OpenAIError,
    StepView,
    answer_source,
    compression_ratio,
    from_security_error,
    language_name,
    parse_request,
    render_answer,
    verbose_json,
    wait_outcome,
)
from functions.api.openai_audio.forms import Task
from functions.api.results import JobResults
from functions.api.security import SecurityError
from shared.domain.languages import WHISPER_TO_ISO639_3
from shared.domain.results import Transcript, Translation

JOB = uuid.UUID("00000000-0000-4000-8000-000000000001")


def form(*fields: tuple[str, str], file: bool = True) -> FormData:
    items: list[tuple[str, str | UploadFile]] = list(fields)
    if file:
        upload = UploadFile(io.BytesIO(b"RIFF"), filename="clip.wav", headers=Headers({"content-type": "audio/wav"}))
        items.append(("file", upload))
    return FormData(items)


def transcript() -> Transcript:
    return Transcript.model_validate(
        {
            "language": "en",
            "text": "Hello world. How are you?",
            "duration": 3.25,
            "segments": [
                {
                    "start": 0.0,
                    "end": 1.2,
                    "text": "Hello world.",
                    "words": [
                        {"start": 0.0, "end": 0.5, "word": " Hello", "probability": 0.9},
                        {"start": 0.6, "end": 1.2, "word": " world.", "probability": 0.8},
                    ],
                },
                {"start": 1.5, "end": 3.0, "text": "How are you?", "words": []},
            ],
        }
    )


def request(response_format: str) -> AudioRequest:
    return parse_request(form(("model", "whisper-1"), ("response_format", response_format)), "transcribe")


# --- the form -----------------------------------------------------------------------------------------


def test_a_full_form_becomes_the_jobs_settings() -> None:
    parsed = parse_request(
        form(
            ("model", "whisper-1"),
            ("language", "EN"),
            ("prompt", "SpeechFlow, Dashwood"),
            ("response_format", "verbose_json"),
            ("temperature", "0.2"),
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
            ("keywords[]", "Dashwood"),
            ("keywords[]", "Norland"),
        ),
        "transcribe",
    )

    assert parsed.language == "eng"
    assert parsed.response_format == "verbose_json"
    assert parsed.temperature == 0.2
    assert parsed.granularities == {"word", "segment"}
    assert parsed.job_options() == {
        "prompt": "SpeechFlow, Dashwood",
        "hotwords": ["Dashwood", "Norland"],
        "openai": {
            "endpoint": "transcriptions",
            "model": "whisper-1",
            "response_format": "verbose_json",
            "temperature": 0.2,
        },
    }


def test_defaults_are_openais() -> None:
    parsed = parse_request(form(("model", "any-model-name")), "translate")

    assert (parsed.response_format, parsed.temperature, parsed.language) == ("json", 0.0, None)
    assert parsed.granularities == frozenset()
    assert parsed.job_options() == {
        "openai": {"endpoint": "translations", "model": "any-model-name", "response_format": "json", "temperature": 0.0}
    }


@pytest.mark.parametrize(
    ("fields", "file", "param"),
    [
        ((("model", "whisper-1"),), False, "file"),
        ((("model", "whisper-1"), ("file", "not a file")), False, "file"),
        ((), True, "model"),
        ((("model", "  "),), True, "model"),
        ((("model", "whisper-1"), ("language", "xx")), True, "language"),
        ((("model", "whisper-1"), ("response_format", "json_lines")), True, "response_format"),
        ((("model", "m"), ("known_speaker_names[]", "agent")), True, "known_speaker_names"),
        (
            (("model", "m"), ("known_speaker_references[]", "data:audio/wav;base64,UklGRg==")),
            True,
            "known_speaker_references",
        ),
        ((("model", "whisper-1"), ("temperature", "hot")), True, "temperature"),
        ((("model", "whisper-1"), ("temperature", "1.5")), True, "temperature"),
        ((("model", "whisper-1"), ("temperature", "nan")), True, "temperature"),
        ((("model", "whisper-1"), ("timestamp_granularities[]", "sentence")), True, "timestamp_granularities"),
        ((("model", "whisper-1"), ("stream", "true"), ("response_format", "srt")), True, "response_format"),
        ((("model", "whisper-1"), ("prompt", "x" * 2001)), True, "prompt"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(fields: tuple[tuple[str, str], ...], file: bool, param: str) -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_request(form(*fields, file=file), "transcribe")

    assert refused.value.status == 400
    assert refused.value.param == param
    assert refused.value.error_type == "invalid_request_error"


def test_too_many_keywords_are_refused_as_keywords() -> None:
    parsed = parse_request(form(("model", "m"), *[("keywords[]", f"w{i}") for i in range(101)]), "transcribe")

    with pytest.raises(OpenAIError) as refused:
        parsed.job_options()

    assert (refused.value.status, refused.value.param) == (400, "keywords")


# --- the wait --------------------------------------------------------------------------------------


def test_the_transcript_is_ready_when_transcribe_has_completed_even_if_the_job_goes_on() -> None:
    steps = {"LID": StepView("completed"), "TRANSCRIBE": StepView("completed"), "TRANSLATE": StepView("processing")}

    assert wait_outcome(task="transcribe", job_status="processing", steps=steps, max_retries=3) == "ready"
    assert wait_outcome(task="translate", job_status="processing", steps=steps, max_retries=3) == "waiting"


def test_a_step_being_retried_is_still_waited_for() -> None:
    steps = {"TRANSCRIBE": StepView("failed", retry_count=1, retryable=True, error_message="busy")}

    assert wait_outcome(task="transcribe", job_status="processing", steps=steps, max_retries=3) == "waiting"


def test_a_translation_that_failed_for_good_ends_the_wait_while_the_job_goes_on() -> None:
    steps = {"TRANSCRIBE": StepView("completed"), "TRANSLATE": StepView("failed", 3, True, "model down")}

    outcome = wait_outcome(task="translate", job_status="processing", steps=steps, max_retries=3)

    assert isinstance(outcome, OpenAIError)
    assert outcome.status == 503
    assert "model down" in outcome.message


def test_a_permanent_failure_is_the_clients_400() -> None:
    steps = {"TRANSCRIBE": StepView("failed", 0, False, "prompt too long")}

    outcome = wait_outcome(task="transcribe", job_status="failed", steps=steps, max_retries=3)

    assert isinstance(outcome, OpenAIError)
    assert (outcome.status, outcome.param) == (400, "file")
    assert "prompt too long" in outcome.message


def test_a_permanent_failure_of_an_earlier_step_is_the_clients_400_too() -> None:
    # LID failed for good (the audio's fault): TRANSCRIBE, the step the answer needs, never ran.
    lid_refused = {"LID": StepView("failed", 0, False, "the audio holds no samples")}
    lid_gave_up = {"LID": StepView("failed", 3, True, "worker lost")}

    refused = wait_outcome(task="transcribe", job_status="failed", steps=lid_refused, max_retries=3)
    gave_up = wait_outcome(task="transcribe", job_status="failed", steps=lid_gave_up, max_retries=3, job_error="x")

    assert isinstance(refused, OpenAIError) and (refused.status, refused.param) == (400, "file")
    assert "the audio holds no samples" in refused.message
    assert isinstance(gave_up, OpenAIError) and gave_up.status == 503


def test_a_cancelled_job_is_a_409_and_a_job_failed_before_the_step_says_why() -> None:
    cancelled = wait_outcome(task="transcribe", job_status="cancelled", steps={}, max_retries=3)
    failed = wait_outcome(
        task="transcribe", job_status="failed", steps={"LID": StepView("failed")}, max_retries=3, job_error="LID died"
    )

    assert isinstance(cancelled, OpenAIError) and cancelled.status == 409
    assert isinstance(failed, OpenAIError) and failed.status == 503 and "LID died" in failed.message


# --- the answers -------------------------------------------------------------------------------------


def test_verbose_json_has_openais_segment_fields_and_words_only_when_asked() -> None:
    both = verbose_json(
        transcript(), task="transcribe", language="eng", temperature=0.0, granularities=frozenset({"word", "segment"})
    )
    default = verbose_json(transcript(), task="transcribe", language="eng", temperature=0.4, granularities=frozenset())
    words_only = verbose_json(
        transcript(), task="transcribe", language="eng", temperature=0.0, granularities=frozenset({"word"})
    )

    assert (both.task, both.language, both.duration, both.text) == (
        "transcribe",
        "english",
        3.25,
        "Hello world. How are you?",
    )
    assert both.segments is not None and [s.id for s in both.segments] == [0, 1]
    first = both.segments[0]
    assert (first.start, first.end, first.seek, first.text, first.tokens) == (0.0, 1.2, 0, " Hello world.", [])
    assert first.avg_logprob == pytest.approx((math.log(0.9) + math.log(0.8)) / 2, abs=1e-4)
    assert both.segments[1].seek == 150 and both.segments[1].avg_logprob == 0.0
    assert both.words is not None and [w.word for w in both.words] == ["Hello", "world."]
    assert default.words is None and default.segments is not None and default.segments[0].temperature == 0.4
    assert words_only.segments is None and words_only.words is not None


def test_verbose_json_of_a_translation_is_english() -> None:
    translation = Translation.model_validate({**transcript().model_dump(), "language": "en", "source_language": "fr"})

    verbose = verbose_json(translation, task="translate", language="fra", temperature=0.0, granularities=frozenset())

    assert (verbose.task, verbose.language) == ("translate", "english")


def test_language_names_cover_every_whisper_language() -> None:
    assert set(WHISPER_LANGUAGE_NAMES) == set(WHISPER_TO_ISO639_3)
    assert [language_name(code) for code in ("eng", "en", "fra", "cmn", "yue")] == [
        "english",
        "english",
        "french",
        "chinese",
        "cantonese",
    ]
    assert language_name("xyz") == "xyz"
    assert language_name(None) == "unknown"


def test_compression_ratio_is_whispers() -> None:
    assert compression_ratio("") == 0.0
    assert compression_ratio("la " * 200) > 2.4  # Whisper's threshold for a repetition loop
    assert compression_ratio("Hello world.") < 1.5


@pytest.mark.parametrize(
    ("fmt", "media", "expected"),
    [
        ("text", "text/plain", "Hello world. How are you?\n"),
        ("srt", "application/x-subrip", "1\n00:00:00,000 --> 00:00:01,200\nHello world.\n\n2\n"),
        ("vtt", "text/vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.200\nHello world.\n\n"),
    ],
)
def test_text_formats(fmt: str, media: str, expected: str) -> None:
    response = render_answer(transcript(), request(fmt), language="eng", job_id=JOB)

    body = bytes(response.body).decode()
    assert body.startswith(expected)
    assert response.headers["content-type"] == f"{media}; charset=utf-8"
    assert response.headers[JOB_ID_HEADER] == str(JOB)


def test_json_formats() -> None:
    plain = json.loads(bytes(render_answer(transcript(), request("json"), language="eng", job_id=JOB).body))
    verbose = json.loads(bytes(render_answer(transcript(), request("verbose_json"), language="eng", job_id=JOB).body))

    assert plain == {"text": "Hello world. How are you?", "usage": {"type": "duration", "seconds": 3.25}}
    assert verbose["language"] == "english" and len(verbose["segments"]) == 2 and "words" not in verbose


def test_a_translation_skipped_because_the_audio_is_english_answers_the_transcript() -> None:
    skipped = JobResults(found={"TRANSCRIBE": transcript()}, skipped={"TRANSLATE"})
    missing = JobResults(found={"TRANSCRIBE": transcript()})

    assert answer_source(skipped, "translate") is not None
    assert answer_source(missing, "translate") is None
    assert answer_source(missing, "transcribe") is not None


# --- the error shape -------------------------------------------------------------------------------


def test_errors_have_openais_shape_and_the_job_id_when_there_is_one() -> None:
    response = OpenAIError(504, "not yet", code="timeout", error_type="timeout", job_id=JOB).response()

    assert response.status_code == 504
    assert json.loads(bytes(response.body)) == {
        "error": {"message": "not yet", "type": "timeout", "param": None, "code": "timeout", "job_id": str(JOB)}
    }
    assert response.headers[JOB_ID_HEADER] == str(JOB)


@pytest.mark.parametrize(
    ("status", "expected_status", "expected_type", "param"),
    [
        (401, 401, "invalid_request_error", None),
        (422, 400, "invalid_request_error", "file"),
        (429, 429, "requests", None),
        (503, 503, "server_error", None),
    ],
)
def test_security_refusals_in_openais_terms(status: int, expected_status: int, expected_type: str, param: str) -> None:
    error = from_security_error(SecurityError(status, "some_code", "refused", headers={"Retry-After": "3"}))

    assert (error.status, error.error_type, error.param) == (expected_status, expected_type, param)
    assert error.message == "refused"
    if status in (401, 429):
        assert error.response().headers["Retry-After"] == "3"


def test_a_prompt_longer_than_whisper_reads_is_refused_before_any_job() -> None:
    prompt = "Zylqor Qxv Wrblt " * 40  # under the form's character limit, far over 224 tokens
    parsed = parse_request(form(("model", "m"), ("prompt", prompt)), "transcribe")

    with pytest.raises(OpenAIError) as refused:
        parsed.job_options()

    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "prompt", "prompt_too_long")
    fits = parse_request(form(("model", "m"), ("prompt", "Release notes for Zylqor.")), "transcribe")
    assert fits.job_options()["prompt"] == "Release notes for Zylqor."


# --- speakers: diarized_json -------------------------------------------------------------------------


def test_diarized_json_asks_the_job_for_speakers_and_translations_refuse_it() -> None:
    parsed = request("diarized_json")
    translation = form(("model", "whisper-1"), ("response_format", "diarized_json"))

    assert parsed.diarize and not request("json").diarize
    assert parsed.job_options()["speaker_labels"] is True
    assert "speaker_labels" not in request("verbose_json").job_options()
    with pytest.raises(OpenAIError) as refused:
        parse_request(translation, "translate")
    assert (refused.value.status, refused.value.param) == (400, "response_format")


def test_speakers_asked_for_wait_for_the_diarization_too() -> None:
    transcribed = {"TRANSCRIBE": StepView("completed"), "DIARIZE": StepView("processing")}
    both = {"TRANSCRIBE": StepView("completed"), "DIARIZE": StepView("completed")}
    diarize_failed = {"TRANSCRIBE": StepView("completed"), "DIARIZE": StepView("failed", 3, True, "senko crashed")}

    assert wait_outcome(task="transcribe", job_status="processing", steps=transcribed, max_retries=3) == "ready"
    waiting = wait_outcome(task="transcribe", job_status="processing", steps=transcribed, max_retries=3, diarize=True)
    ready = wait_outcome(task="transcribe", job_status="processing", steps=both, max_retries=3, diarize=True)
    failed = wait_outcome(
        task="transcribe", job_status="partial_complete", steps=diarize_failed, max_retries=3, diarize=True
    )
    assert (waiting, ready) == ("waiting", "ready")
    assert isinstance(failed, OpenAIError) and failed.status == 503
    assert "speaker diarization" in failed.message and "senko crashed" in failed.message


def test_diarized_json_is_openais_shape_with_a_speaker_per_segment() -> None:
    labelled = transcript().model_copy(deep=True)
    labelled.segments[0].speaker = "A"
    labelled.segments[1].speaker = "B"
    labelled.segments.append(labelled.segments[1].model_copy(update={"start": 3.1, "end": 3.2, "speaker": None}))

    body = json.loads(bytes(render_answer(labelled, request("diarized_json"), language="eng", job_id=JOB).body))

    assert body["task"] == "transcribe" and body["duration"] == 3.25
    assert body["usage"] == {"type": "duration", "seconds": 3.25}
    assert [(s["id"], s["speaker"], s["start"], s["end"]) for s in body["segments"]] == [
        ("seg_0", "A", 0.0, 1.2),
        ("seg_1", "B", 1.5, 3.0),
        ("seg_2", "unknown", 3.1, 3.2),
    ]
    assert all(segment["type"] == "transcript.text.segment" for segment in body["segments"])
    assert body["segments"][0]["text"] == "Hello world."


def test_the_sdks_own_types_read_every_json_answer() -> None:
    from openai.types.audio import Transcription, TranscriptionDiarized, TranscriptionVerbose

    labelled = transcript().model_copy(deep=True)
    for segment, speaker in zip(labelled.segments, "AB", strict=True):
        segment.speaker = speaker
    shapes = {"json": Transcription, "verbose_json": TranscriptionVerbose, "diarized_json": TranscriptionDiarized}
    for fmt, model in shapes.items():
        body = json.loads(bytes(render_answer(labelled, request(fmt), language="eng", job_id=JOB).body))
        read = model.model_validate(body, strict=False)
        # Nothing the SDK does not know, but verbose_json's `task`, which OpenAI's own answers carry.
        assert set(read.model_extra or {}) <= {"task"}, (fmt, read.model_extra)
        assert read.usage is not None and read.usage.seconds == 3.25
    diarized = TranscriptionDiarized.model_validate(
        json.loads(bytes(render_answer(labelled, request("diarized_json"), language="eng", job_id=JOB).body))
    )
    assert [segment.speaker for segment in diarized.segments] == ["A", "B"]


# --- stream=true ------------------------------------------------------------------------------------


def streamed(source: Transcript, *fields: tuple[str, str]) -> list[dict[str, Any]]:
    """The server-sent events of a stream=true answer, as the client reads them."""
    parsed = parse_request(form(("model", "gpt-4o-transcribe"), ("stream", "true"), *fields), "transcribe")
    response = render_answer(source, parsed, language="eng", job_id=JOB)
    assert isinstance(response, StreamingResponse)
    assert response.media_type == "text/event-stream" and response.headers[JOB_ID_HEADER] == str(JOB)

    async def read() -> str:
        return "".join(
            [chunk if isinstance(chunk, str) else bytes(chunk).decode() async for chunk in response.body_iterator]
        )

    body = asyncio.run(read())
    blocks = [block for block in body.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in blocks), body
    return [json.loads(block.removeprefix("data: ")) for block in blocks]


def test_a_streamed_transcription_is_openais_events_read_by_the_sdks_own_types() -> None:
    from openai.types.audio import TranscriptionStreamEvent
    from pydantic import TypeAdapter

    events = streamed(transcript())

    assert events == [
        {"type": "transcript.text.delta", "delta": "Hello world."},
        {"type": "transcript.text.delta", "delta": " How are you?"},
        {"type": "transcript.text.done", "text": "Hello world. How are you?"},
    ]
    read = [TypeAdapter(TranscriptionStreamEvent).validate_python(event) for event in events]
    assert "".join(event.delta for event in read if event.type == "transcript.text.delta") == read[-1].text  # type: ignore[union-attr]


def test_a_streamed_diarization_sends_each_segment_with_its_speaker_after_its_text() -> None:
    labelled = transcript().model_copy(deep=True)
    for segment, speaker in zip(labelled.segments, "AB", strict=True):
        segment.speaker = speaker

    events = streamed(labelled, ("response_format", "diarized_json"))

    assert [event["type"] for event in events] == [
        "transcript.text.delta",
        "transcript.text.segment",
        "transcript.text.delta",
        "transcript.text.segment",
        "transcript.text.done",
    ]
    assert [(event["id"], event["speaker"]) for event in events if event["type"] == "transcript.text.segment"] == [
        ("seg_0", "A"),
        ("seg_1", "B"),
    ]
    assert [event.get("segment_id") for event in events if event["type"] == "transcript.text.delta"] == [
        "seg_0",
        "seg_1",
    ]


@pytest.mark.parametrize(
    ("fields", "task", "param"),
    [
        ((("response_format", "verbose_json"),), "transcribe", "response_format"),
        ((("response_format", "vtt"),), "transcribe", "response_format"),
        ((), "translate", "stream"),
    ],
)
def test_what_cannot_be_streamed_is_a_400(fields: tuple[tuple[str, str], ...], task: Task, param: str) -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_request(form(("model", "whisper-1"), ("stream", "true"), *fields), task)
    assert (refused.value.status, refused.value.param) == (400, param)
    assert "stream" in refused.value.message
