"""The OpenAI audio answer: which steps it waits for, whether they are ready, and the transcript or
translation rendered in the format asked for (json, text, srt, vtt, verbose_json, diarized_json)."""

from __future__ import annotations

import json
import logging
import math
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from fastapi import Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from functions.api.openai_audio.errors import JOB_ID_HEADER, OpenAIError
from functions.api.openai_audio.forms import AudioRequest, Task
from functions.api.results import JobResults
from shared.domain import subtitles
from shared.domain.languages import UnsupportedLanguage, to_whisper
from shared.domain.models import Job
from shared.domain.results import Segment, Transcript
from shared.domain.status import TERMINAL_STATUSES

log = logging.getLogger("functions.api.openai_audio")


WHISPER_LANGUAGE_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}  # fmt: skip
"""The names OpenAI's verbose_json gives the language (Whisper's own names, lower case)."""


@dataclass(frozen=True)
class StepView:
    """What the wait needs to know of one step row."""

    status: str
    retry_count: int = 0
    retryable: bool = True
    error_message: str | None = None


_WHAT = {"TRANSCRIBE": "transcription", "TRANSLATE": "translation", "DIARIZE": "speaker diarization"}


def needed_steps(task: Task, *, diarize: bool = False) -> tuple[str, ...]:
    """The steps whose results make the answer."""
    if task == "translate":
        return ("TRANSLATE",)
    return ("TRANSCRIBE", "DIARIZE") if diarize else ("TRANSCRIBE",)


def wait_outcome(
    *,
    task: Task,
    job_status: str,
    steps: Mapping[str, StepView],
    max_retries: int,
    job_error: str | None = None,
    diarize: bool = False,
) -> Literal["ready", "waiting"] | OpenAIError:
    """Whether the parts the answer needs are ready, still to come, or never coming (and why, as the
    answer).

    Pure: the wait loop reads the job and asks again. A step failed for good is one that will not be
    retried (a permanent cause, or its retries spent) — the job may still be running its other steps.
    """
    needed = [(name, steps.get(name)) for name in needed_steps(task, diarize=diarize)]
    if all(step is not None and step.status == "completed" for _, step in needed):
        return "ready"
    given_up = [
        (name, step)
        for name, step in needed
        if step is not None and step.status == "failed" and (not step.retryable or step.retry_count >= max_retries)
    ]
    if job_status not in TERMINAL_STATUSES and not given_up:
        return "waiting"
    if job_status == "cancelled":
        return OpenAIError(409, "the job was cancelled before it finished", code="job_cancelled")
    missing = [(name, step) for name, step in needed if step is None or step.status != "completed"]
    name, step = (given_up or missing)[0]
    if step is None:
        # The step never ran: an earlier one (LID, FETCH) that failed for good answers for it.
        step = next((view for view in steps.values() if view.status == "failed" and not view.retryable), None)
    reason = (step.error_message if step else None) or job_error or f"the job ended {job_status}"
    what = _WHAT[name]
    if step is not None and not step.retryable:
        # A permanent cause is the input's (not audio after all, a prompt too long, …): the client's to fix.
        return OpenAIError(400, f"the {what} failed: {reason}", param="file", code="unprocessable_audio")
    return OpenAIError(503, f"the {what} failed after retries: {reason}", code="job_failed")


def _step_views(job: Job) -> dict[str, StepView]:
    return {
        step.step_type: StepView(
            status=step.status,
            retry_count=step.retry_count,
            retryable=step.retryable,
            error_message=step.error_message,
        )
        for step in job.steps
    }


class OpenAIUsage(BaseModel):
    """What the request used: for Whisper, OpenAI counts the audio's seconds."""

    type: Literal["duration"] = "duration"
    seconds: float


class OpenAIText(BaseModel):
    """`json`: the text (and, for a transcription, the usage)."""

    text: str
    usage: OpenAIUsage | None = None


class OpenAIWord(BaseModel):
    word: str
    start: float
    end: float


class OpenAISegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class OpenAIVerbose(BaseModel):
    """`verbose_json`: the task, the language's English name, the duration, the text and its timings."""

    task: Task
    language: str
    duration: float
    text: str
    segments: list[OpenAISegment] | None = None
    words: list[OpenAIWord] | None = None
    usage: OpenAIUsage | None = None


class OpenAIDiarizedSegment(BaseModel):
    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    text: str
    speaker: str


class OpenAIDiarized(BaseModel):
    """`diarized_json`: the text, and its segments cut where the speaker changes, each with its speaker."""

    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[OpenAIDiarizedSegment]
    usage: OpenAIUsage | None = None


UNKNOWN_SPEAKER = "unknown"
"""The label of a segment the diarization found no speaker for (no turn overlaps or is near it)."""


def language_name(code: str | None) -> str:
    """OpenAI's name of a language (`eng`, `en` → `english`); a code no table knows is given back as is."""
    if not code:
        return "unknown"
    try:
        return WHISPER_LANGUAGE_NAMES.get(to_whisper(code), code)
    except UnsupportedLanguage:
        return code


def compression_ratio(text: str) -> float:
    """Whisper's own measure: the text's UTF-8 length over its zlib-compressed length."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def _avg_logprob(segment: Segment) -> float:
    """From the segment's own figure where the transcript has one, else the words' probabilities (their
    mean log), which is what the transcript keeps of the decoder's confidence."""
    extra = segment.model_extra or {}
    if isinstance(extra.get("avg_logprob"), int | float):
        return float(extra["avg_logprob"])
    probabilities = [word.probability for word in segment.words or [] if word.probability]
    if not probabilities:
        return 0.0
    return round(sum(math.log(p) for p in probabilities) / len(probabilities), 4)


def verbose_json(
    source: Transcript,
    *,
    task: Task,
    language: str | None,
    temperature: float,
    granularities: frozenset[str],
) -> OpenAIVerbose:
    """OpenAI's verbose_json from a transcript (or translation). `tokens` is empty and `no_speech_prob` 0:
    the transcript does not keep token ids, and the VAD has already dropped what was not speech."""
    timed = [segment for segment in source.segments if segment.timed]
    segments = [
        OpenAISegment(
            id=index,
            seek=round((segment.start or 0.0) * 100),  # Whisper counts seek in 10 ms frames
            start=segment.start or 0.0,
            end=segment.end or 0.0,
            text=segment.text if segment.text.startswith(" ") else f" {segment.text}",
            tokens=[],
            temperature=temperature,
            avg_logprob=_avg_logprob(segment),
            compression_ratio=compression_ratio(segment.text),
            no_speech_prob=0.0,
        )
        for index, segment in enumerate(timed)
    ]
    words = [
        OpenAIWord(word=word.word.strip(), start=word.start, end=word.end)
        for segment in timed
        for word in segment.words or []
    ]
    duration = _duration(source)
    return OpenAIVerbose(
        task=task,
        language="english" if task == "translate" else language_name(language or source.language),
        duration=round(duration, 3),
        text=source.full_text(),
        segments=segments if "segment" in granularities or not granularities else None,
        words=words if "word" in granularities else None,
        usage=_usage(source) if task == "transcribe" else None,
    )


def diarized_json(source: Transcript) -> OpenAIDiarized:
    """OpenAI's diarized_json from a transcript with speakers (shared/domain/speaker_join.py)."""
    timed = [segment for segment in source.segments if segment.timed and segment.text.strip()]
    return OpenAIDiarized(
        duration=_duration(source),
        text=source.full_text(),
        segments=[
            OpenAIDiarizedSegment(
                id=f"seg_{index}",
                start=segment.start or 0.0,
                end=segment.end or 0.0,
                text=segment.text.strip(),
                speaker=segment.speaker or UNKNOWN_SPEAKER,
            )
            for index, segment in enumerate(timed)
        ],
        usage=_usage(source),
    )


def _duration(source: Transcript) -> float:
    found = source.duration
    if found is None:
        found = max((segment.end or 0.0 for segment in source.segments), default=0.0)
    return round(found, 3)


def _usage(source: Transcript) -> OpenAIUsage:
    return OpenAIUsage(seconds=_duration(source))


def answer_source(results: JobResults, task: Task) -> Transcript | None:
    """The text the task answers with: the transcript, or the English translation — which is the
    transcript itself when TRANSLATE was skipped because the audio is already English."""
    if task == "transcribe":
        return results.transcript
    if results.translation is not None:
        return results.translation
    return results.transcript if "TRANSLATE" in results.skipped else None


def render_answer(
    source: Transcript,
    request: AudioRequest,
    *,
    language: str | None,
    job_id: uuid.UUID,
) -> Response:
    headers = {JOB_ID_HEADER: str(job_id)}
    if request.stream:
        events = stream_events(source, diarize=request.diarize)
        return StreamingResponse(_server_sent(events), media_type="text/event-stream", headers=headers)
    fmt = request.response_format
    if fmt == "json":
        usage = _usage(source) if request.task == "transcribe" else None
        answer = OpenAIText(text=source.full_text(), usage=usage)
        return JSONResponse(answer.model_dump(exclude_none=True), headers=headers)
    if fmt == "diarized_json":
        return JSONResponse(diarized_json(source).model_dump(), headers=headers)
    if fmt == "verbose_json":
        verbose = verbose_json(
            source,
            task=request.task,
            language=language,
            temperature=request.temperature,
            granularities=request.granularities,
        )
        return JSONResponse(verbose.model_dump(exclude_none=True), headers=headers)
    if fmt == "srt":
        body = subtitles.to_srt(source.segments, rules=request.cue_rules)
    elif fmt == "vtt":
        body = subtitles.to_vtt(source.segments, rules=request.cue_rules)
    else:
        body = source.full_text() + "\n"
    media = {"srt": "application/x-subrip", "vtt": "text/vtt"}.get(fmt, "text/plain")
    return PlainTextResponse(body, media_type=f"{media}; charset=utf-8", headers=headers)


def stream_events(source: Transcript, *, diarize: bool) -> list[dict[str, object]]:
    """OpenAI's transcription stream for a finished transcript: a `transcript.text.delta` per segment
    (with diarized_json its `segment_id`, then the `transcript.text.segment` itself), and
    `transcript.text.done` with the whole text, as the json answer has it (without speakers, the deltas
    add up to it)."""
    text = source.full_text()
    events: list[dict[str, object]] = []
    if diarize:
        for segment in diarized_json(source).segments:
            delta = (" " if events else "") + segment.text
            events += [
                {"type": "transcript.text.delta", "delta": delta, "segment_id": segment.id},
                segment.model_dump(),
            ]
    else:
        pieces = [segment.text.strip() for segment in source.segments if segment.text.strip()]
        deltas = [(" " if index else "") + piece for index, piece in enumerate(pieces)]
        if "".join(deltas) != text:  # a transcript whose text is not its segments' (an uploaded one)
            deltas = [text] if text else []
        events += [{"type": "transcript.text.delta", "delta": delta} for delta in deltas]
    events.append({"type": "transcript.text.done", "text": text})
    return events


def _server_sent(events: list[dict[str, object]]) -> Iterator[str]:
    for event in events:
        yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
