"""OpenAI-compatible audio: `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`.

A synchronous front over an ordinary job, so that clients written for OpenAI's audio API (its SDKs,
`curl -F file=@…`) work unchanged: the request creates a job owned by the calling key, writes the
uploaded file to the job's audio blob, probes it exactly as `POST /jobs/{id}/start` does, starts the
job, and polls the database until the part it needs is ready — the transcript, or the English
translation — or until OPENAI_WAIT_SECONDS have passed (then 504, with the job id to poll through
`GET /jobs/{id}`). The job shows in `GET /jobs` and on the dashboard like any other.

Workflows: a transcription with `language` is `transcribe_only`; without it the spoken language is
found first (LID), which `full_pipeline` does. `response_format=diarized_json` (OpenAI's format for
speaker-labelled transcripts) adds the DIARIZE step beside TRANSCRIBE, and the answer waits for both:
segments cut where the speaker changes, each with its speaker "A", "B", … . A translation is
`full_pipeline` into English, whose TRANSLATE step is skipped (and the transcript is the English
text) when the audio is English. The answer comes as soon as those parts are ready; the job's later
steps go on and their results stay readable through `GET /jobs/{id}/results`.

Errors on these routes take OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so
that the SDKs raise their usual exceptions; every other route keeps SpeechFlow's own shape.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import zlib
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser, parse_options_header

from functions.api.results import JobResults, load_results
from functions.api.schemas import safe_filename
from functions.api.security import Principal, PrincipalDep, SecurityError, check_upload
from shared import subtitles
from shared.bus import publish_committed
from shared.config import Settings
from shared.jobs import create_job, get_job, start_job
from shared.models import Job
from shared.options import JobOptions
from shared.results import Segment, Transcript
from shared.runtime import Runtime
from shared.speech.languages import UnsupportedLanguage, to_iso639_3, to_whisper
from shared.speech.prompt_tokens import tokens_over_limit
from shared.speech.transcriber import MAX_PROMPT_TOKENS
from shared.status import TERMINAL_STATUSES
from shared.storage.local import LocalBlobStore
from shared.subtitle_cues import CUE_SECONDS, LINE_CHARS, LINES, CueRules
from shared.tracing import current_traceparent
from shared.uploads import input_blob_path

log = logging.getLogger(__name__)

Task = Literal["transcribe", "translate"]
ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
TRANSLATION_FORMATS: tuple[str, ...] = ("json", "text", "srt", "verbose_json", "vtt")
"""OpenAI translates with Whisper only, which labels no speakers."""
Granularity = Literal["word", "segment"]

MAX_FILE_BYTES = 25 * 1024 * 1024
"""OpenAI's own limit on these endpoints, so its clients already respect it. The synchronous wait
suits short audio; longer recordings go through POST /jobs (up to MAX_UPLOAD_BYTES)."""
_MULTIPART_OVERHEAD = 64 * 1024
"""Room for the form's other fields and part headers when the request's Content-Length is checked."""
JOB_ID_HEADER = "x-speechflow-job-id"
"""On every answer that has a job: the job behind it, to read with GET /jobs/{id}."""
_FIRST_POLL_S, _MAX_POLL_S, _POLL_GROWTH = 0.2, 2.0, 1.5

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


# --- errors in OpenAI's shape -------------------------------------------------------------------------


class OpenAIError(Exception):
    """A refusal on these routes, answered as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        job_id: uuid.UUID | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.error_type = error_type or ("invalid_request_error" if status < 500 else "server_error")
        self.job_id = job_id
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        headers = dict(self.headers)
        if self.job_id is not None:
            body["job_id"] = str(self.job_id)
            headers[JOB_ID_HEADER] = str(self.job_id)
        return JSONResponse(status_code=self.status, content={"error": body}, headers=headers)


def from_security_error(error: SecurityError) -> OpenAIError:
    """401, 422 (the upload), 429 and 503 of the security layer, in OpenAI's terms."""
    if error.status == 422:
        # OpenAI answers a file it cannot use with 400 invalid_request_error, param "file".
        return OpenAIError(400, error.message, param="file", code=error.code)
    if error.status == 429:
        return OpenAIError(429, error.message, code="rate_limit_exceeded", error_type="requests", headers=error.headers)
    return OpenAIError(error.status, error.message, code=error.code, headers=error.headers)


class OpenAIErrorRoute(APIRoute):
    """A route whose refusals — including authentication and the framework's own — take OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as error:
                return error.response()
            except SecurityError as error:
                return from_security_error(error).response()
            except RequestValidationError as error:
                first: dict[str, Any] = next(iter(error.errors()), {})
                param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
                return OpenAIError(400, str(first.get("msg", "invalid request")), param=param).response()
            except StarletteHTTPException as error:
                return OpenAIError(error.status_code, str(error.detail)).response()
            except Exception as error:
                # Never a bare 500 page: the shape the SDK expects, the cause in the log only.
                log.error(
                    "unexpected error in %s %s",
                    request.method,
                    request.url.path,
                    exc_info=error,
                    extra={"action": "openai_audio_unexpected_error"},
                )
                return OpenAIError(500, "the server could not answer this request; it has been logged").response()

        return openai_shaped


# --- the request -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioRequest:
    """The form fields of a transcription or translation request, checked."""

    task: Task
    upload: UploadFile
    model: str
    language: str | None
    """ISO 639-3, converted from what the client sent (OpenAI takes ISO 639-1)."""
    languages: tuple[str, ...] | None
    prompt: str | None
    hotwords: tuple[str, ...] | None
    response_format: ResponseFormat
    temperature: float
    granularities: frozenset[str]
    cue_rules: CueRules | None = None
    """How srt and vtt cues are cut (max_line_chars, max_lines, max_cue_seconds; shared/subtitle_cues.py)."""

    @property
    def diarize(self) -> bool:
        """Speakers asked for: the job diarizes and the answer waits for it."""
        return self.response_format == "diarized_json"

    def job_options(self) -> dict[str, Any]:
        """What the job records: its vocabulary options, speaker labels, and how it was asked for."""
        try:
            options = JobOptions(
                prompt=self.prompt, hotwords=self.hotwords, speaker_labels=self.diarize, languages=self.languages
            )
        except ValidationError as error:
            first = error.errors()[0]
            param = "keywords" if first["loc"] and first["loc"][0] == "hotwords" else str(first["loc"][0])
            raise OpenAIError(400, f"{param}: {first['msg']}", param=param) from None
        if (tokens := tokens_over_limit(self.prompt, self.hotwords)) is not None:
            message = f"prompt is {tokens} tokens long with the keywords; at most {MAX_PROMPT_TOKENS} are read"
            raise OpenAIError(400, message, param="prompt", code="prompt_too_long")
        openai = {
            "endpoint": "transcriptions" if self.task == "transcribe" else "translations",
            "model": self.model,
            "response_format": self.response_format,
            "temperature": self.temperature,
        }
        return {**options.stored(), "openai": openai}


def _text_field(form: FormData, name: str, *, max_length: int = 2000) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OpenAIError(400, f"{name} must be a text field, not a file", param=name)
    value = value.strip()
    if len(value) > max_length:
        raise OpenAIError(400, f"{name} is longer than {max_length} characters", param=name)
    if "\x00" in value:
        raise OpenAIError(400, f"{name} must not contain a NUL character", param=name)
    return value or None


def _list_field(form: FormData, name: str) -> list[str]:
    """A repeated field as the SDKs send it (`name[]=a&name[]=b`), or a comma-separated one."""
    values: list[str] = []
    for item in [*form.getlist(f"{name}[]"), *form.getlist(name)]:
        if not isinstance(item, str):
            raise OpenAIError(400, f"{name} must be text, not a file", param=name)
        values.extend(part.strip() for part in item.split(",") if part.strip())
    return values


def parse_request(form: FormData, task: Task) -> AudioRequest:
    """Check the form as OpenAI does; any fault is a 400 naming the field."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise OpenAIError(400, "file is required: send the audio as a multipart file field", param="file")
    model = _text_field(form, "model", max_length=200)
    if model is None:
        raise OpenAIError(400, "model is required (any name; whisper-1 is the usual one)", param="model")
    language = None
    if (code := _text_field(form, "language", max_length=20)) is not None:
        try:
            language = to_iso639_3(to_whisper(code))
        except UnsupportedLanguage:
            raise OpenAIError(
                400, f"language {code!r} is not supported: give an ISO 639-1 code such as en or fr", param="language"
            ) from None
    languages = None
    if language is None and (possible := _list_field(form, "languages")):
        try:
            found = tuple(dict.fromkeys(to_iso639_3(to_whisper(code)) for code in possible))
        except UnsupportedLanguage as error:
            message = f"languages: {error.code!r} is not supported: give ISO 639-1 codes such as en or fr"
            raise OpenAIError(400, message, param="languages") from None
        if len(found) > 20:
            raise OpenAIError(400, "languages: at most 20", param="languages")
        # One possible language is the language; several narrow language identification to them.
        language, languages = (found[0], None) if len(found) == 1 else (None, found)
    response_format = _text_field(form, "response_format", max_length=20) or "json"
    formats = RESPONSE_FORMATS if task == "transcribe" else TRANSLATION_FORMATS
    if response_format not in formats:
        raise OpenAIError(
            400,
            f"response_format {response_format!r} is not supported here: one of {', '.join(formats)}",
            param="response_format",
        )
    for name in ("known_speaker_names", "known_speaker_references"):
        if _list_field(form, name):
            raise OpenAIError(
                400,
                f"{name} is not supported: speakers are labelled A, B, … in order of first appearance",
                param=name,
            )
    temperature = 0.0
    if (raw := _text_field(form, "temperature", max_length=40)) is not None:
        try:
            temperature = float(raw)
        except ValueError:
            temperature = math.nan
        if not 0.0 <= temperature <= 1.0:
            raise OpenAIError(400, "temperature must be a number between 0 and 1", param="temperature")
    granularities = frozenset(_list_field(form, "timestamp_granularities"))
    unknown = sorted(granularities - set(get_args(Granularity)))
    if unknown:
        raise OpenAIError(
            400,
            f"timestamp_granularities: {', '.join(unknown)} is not word or segment",
            param="timestamp_granularities",
        )
    if (_text_field(form, "stream", max_length=10) or "false").lower() == "true":
        raise OpenAIError(400, "streaming is not supported; leave stream unset", param="stream")
    keywords = _list_field(form, "keywords")
    cue_rules = _cue_rules(form, response_format)
    return AudioRequest(
        task=task,
        upload=upload,
        model=model,
        language=language,
        languages=languages,
        prompt=_text_field(form, "prompt"),
        hotwords=tuple(keywords) if keywords else None,
        response_format=response_format,  # type: ignore[arg-type]  # checked against RESPONSE_FORMATS above
        temperature=temperature,
        granularities=granularities,
        cue_rules=cue_rules,
    )


CUE_FIELDS = ("max_line_chars", "max_lines", "max_cue_seconds")


def _cue_rules(form: FormData, response_format: str) -> CueRules | None:
    """The subtitle rules of an srt or vtt answer; a 400 naming the field for a value out of range or
    given with another format."""
    given: dict[str, float] = {}
    for name in CUE_FIELDS:
        if (raw := _text_field(form, name, max_length=20)) is None:
            continue
        if response_format not in ("srt", "vtt"):
            raise OpenAIError(400, f"{name} applies to response_format srt or vtt", param=name)
        try:
            value = float(raw) if name == "max_cue_seconds" else int(raw)
        except ValueError:
            raise OpenAIError(400, f"{name} must be a number, not {raw!r}", param=name) from None
        given[name] = value
    try:
        return CueRules.of(
            max_line_chars=int(given["max_line_chars"]) if "max_line_chars" in given else None,
            max_lines=int(given["max_lines"]) if "max_lines" in given else None,
            max_cue_seconds=given.get("max_cue_seconds"),
        )
    except ValueError as error:
        param = next((name for name in CUE_FIELDS if str(error).startswith(name)), None)
        raise OpenAIError(400, str(error), param=param) from None


# --- waiting for the part asked for -------------------------------------------------------------------


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


# --- answers in OpenAI's shapes --------------------------------------------------------------------------


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


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None
    job_id: str | None = None
    """SpeechFlow's addition: the job to poll with GET /jobs/{id} (504), or whose step failed."""


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


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
    """OpenAI's diarized_json from a transcript with speakers (shared/pipeline/speakers.py)."""
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


# --- the routes --------------------------------------------------------------------------------------


def _form_schema(task: Task) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "The audio (any format ffmpeg reads)."},
        "model": {"type": "string", "minLength": 1, "description": "Recorded with the job; any name."},
        "prompt": {"type": "string", "description": "Whisper's initial prompt (at most 224 tokens)."},
        "response_format": {
            "type": "string",
            "enum": list(RESPONSE_FORMATS if task == "transcribe" else TRANSLATION_FORMATS),
            "default": "json",
            "description": "diarized_json (transcriptions): segments with their speaker, A, B, …",
        },
        "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
        "max_line_chars": {
            "type": "integer",
            "minimum": LINE_CHARS[0],
            "maximum": LINE_CHARS[1],
            "description": "srt and vtt: characters a line (42 when another cue rule is given).",
        },
        "max_lines": {
            "type": "integer",
            "minimum": LINES[0],
            "maximum": LINES[1],
            "description": "srt and vtt: lines a cue (2 when another cue rule is given).",
        },
        "max_cue_seconds": {
            "type": "number",
            "minimum": CUE_SECONDS[0],
            "maximum": CUE_SECONDS[1],
            "description": "srt and vtt: seconds a cue stays (7 when another cue rule is given).",
        },
    }
    if task == "transcribe":
        properties["language"] = {"type": "string", "description": "ISO 639-1; without it LID runs first."}
        properties["timestamp_granularities[]"] = {
            "type": "array",
            "items": {"type": "string", "enum": list(get_args(Granularity))},
            "maxItems": 2,
        }
        properties["languages[]"] = {
            "type": "array",
            "items": {"type": "string"},
            "maxItems": 20,
            "description": "ISO 639-1: the languages the audio may be in; LID answers one of them.",
        }
        properties["keywords[]"] = {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 100},
            "maxItems": 100,
            "description": "Words and names to favour (the job's hotwords).",
        }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file", "model"], "properties": properties}
                }
            },
        }
    }


_ERROR = {"model": OpenAIErrorResponse}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The text in the response_format asked for (json and verbose_json as JSON)",
        "model": OpenAIText | OpenAIVerbose | OpenAIDiarized,
        "content": {"text/plain": {}, "text/vtt": {}, "application/x-subrip": {}},
    },
    400: {**_ERROR, "description": "A field or the file cannot be used"},
    401: {**_ERROR, "description": "No API key (Authorization: Bearer), or one that is not valid"},
    409: {**_ERROR, "description": "The job was cancelled while the request waited"},
    413: {**_ERROR, "description": f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"},
    429: {**_ERROR, "description": "Too many requests for this key; see Retry-After"},
    503: {**_ERROR, "description": "The job failed after its retries, or identities cannot be checked now"},
    504: {**_ERROR, "description": "Not finished within OPENAI_WAIT_SECONDS: poll GET /jobs/{job_id}"},
}


def make_openai_audio_router(settings: Settings) -> APIRouter:
    """The two OpenAI-compatible routes; create_app includes them."""
    router = APIRouter(route_class=OpenAIErrorRoute, tags=["openai"])

    @router.post(
        "/v1/audio/transcriptions",
        responses=RESPONSES,
        openapi_extra=_form_schema("transcribe"),
        response_model=None,
    )
    async def transcriptions(request: Request, principal: PrincipalDep) -> Response:
        """OpenAI-compatible transcription: the text in the spoken language, synchronously."""
        return await _serve(request, principal, settings, "transcribe")

    @router.post(
        "/v1/audio/translations",
        responses=RESPONSES,
        openapi_extra=_form_schema("translate"),
        response_model=None,
    )
    async def translations(request: Request, principal: PrincipalDep) -> Response:
        """OpenAI-compatible translation: the speech as English text, synchronously."""
        return await _serve(request, principal, settings, "translate")

    del transcriptions, translations
    return router


async def _serve(request: Request, principal: Principal, settings: Settings, task: Task) -> Response:
    limit = min(MAX_FILE_BYTES, settings.max_upload_bytes)
    declared = request.headers.get("content-length", "")
    # Refuse before reading: a body this large cannot hold a file within the limit.
    if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise OpenAIError(413, f"the file is larger than the {limit} bytes allowed here", param="file")
    form = await _read_form(request, limit)
    try:
        parsed = parse_request(form, task)
        runtime: Runtime = request.app.state.runtime
        job_id = await run_in_threadpool(_create_and_start, runtime, settings, principal, parsed, limit)
    finally:
        await form.close()
    log.info(
        "openai %s job started",
        task,
        extra={"action": "openai_audio_started", "job_id": str(job_id), "model": parsed.model},
    )
    job = await _wait(request, runtime, settings, job_id, task, diarize=parsed.diarize)
    results = await run_in_threadpool(load_results, runtime, job)
    source = answer_source(results, task)
    if source is None:
        raise OpenAIError(503, "the job finished without the text asked for", code="job_failed", job_id=job_id)
    language = job.detected_language or job.source_language or source.language
    return render_answer(source, parsed, language=language, job_id=job_id)


class _BodyTooLarge(MultiPartException):
    """Raised from inside the parser's stream, so the parser closes the files it has spooled."""


async def _read_form(request: Request, limit: int) -> FormData:
    """The multipart form, reading no more than a file of `limit` bytes could take.

    A body without a Content-Length (chunked) cannot be refused before it is read; it is cut off as
    soon as it passes the limit, rather than spooled whole to disk and refused afterwards."""
    content_type, _ = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise OpenAIError(400, "send the request as multipart/form-data with the audio in its file field", param="file")
    cap = limit + _MULTIPART_OVERHEAD
    too_large = f"the file is larger than the {limit} bytes allowed here"

    async def capped(stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        received = 0
        async for chunk in stream:
            received += len(chunk)
            if received > cap:
                raise _BodyTooLarge(too_large)
            yield chunk

    async with aclosing(request.stream()) as stream, aclosing(capped(stream)) as body:
        parser = MultiPartParser(request.headers, body, max_files=1, max_fields=250)
        try:
            return await parser.parse()
        except _BodyTooLarge:
            raise OpenAIError(413, too_large, param="file") from None
        except MultiPartException as error:
            raise OpenAIError(400, error.message, param="file") from None


def _create_and_start(
    runtime: Runtime, settings: Settings, principal: Principal, request: AudioRequest, limit: int
) -> uuid.UUID:
    """Create the job, write the upload to its audio blob, probe it and start the job — one transaction,
    so a file that is refused leaves no job behind (and its blob is removed)."""
    options = request.job_options()
    job_id = uuid.uuid4()
    filename = safe_filename(request.upload.filename or "audio")
    # No upload URL is made for this job; its file goes straight to where a started job's upload is read.
    blob_path = input_blob_path(job_id, filename)
    container = settings.audio_container
    session: Session
    with runtime.sessions() as session:
        job = create_job(
            session=session,
            job_id=job_id,
            audio_filename=filename[:255],
            workflow_type="transcribe_only" if request.task == "transcribe" and request.language else "full_pipeline",
            source_language=request.language,
            target_language="en",
            callback_url=None,
            source_job_id=None,
            audio_blob_path=blob_path,
            api_key_id=principal.id,
            options=options,
        )
        try:
            _write_upload(runtime, container, blob_path, request.upload, limit)
            info = check_upload(blobs=runtime.blobs, settings=settings, job=job)
        except BaseException:
            session.rollback()
            runtime.blobs.delete(container, blob_path)
            raise
        if info is not None:
            job.audio_duration_seconds = info.duration_seconds
        session.flush()
        if not start_job(
            session=session,
            bus=runtime.bus,
            queue=settings.job_events_queue,
            job_id=job_id,
            traceparent=current_traceparent(),
        ):
            raise OpenAIError(409, "the job could not be started", code="conflict", job_id=job_id)
        session.commit()
    publish_committed(runtime.bus)
    return job_id


def _write_upload(runtime: Runtime, container: str, blob: str, upload: UploadFile, limit: int) -> None:
    """Copy the form's file (already spooled by the parser) to the blob, refusing past `limit` bytes."""
    source = upload.file
    source.seek(0, 2)
    size = source.tell()
    source.seek(0)
    if size == 0:
        raise OpenAIError(400, "the file is empty", param="file", code="invalid_audio")
    if size > limit:
        raise OpenAIError(413, f"the file is {size} bytes; at most {limit} are allowed here", param="file")
    blobs = runtime.blobs
    if isinstance(blobs, LocalBlobStore):
        with blobs.staged_write(container, blob) as target:  # streamed: no copy of the file in memory
            while chunk := source.read(1024 * 1024):
                target.write(chunk)
    else:
        blobs.put(container, blob, source.read())


async def _wait(
    request: Request, runtime: Runtime, settings: Settings, job_id: uuid.UUID, task: Task, *, diarize: bool
) -> Job:
    """Poll the job with growing pauses until its parts are ready, they cannot come, or the wait limit."""
    deadline = time.monotonic() + settings.openai_wait_seconds
    pause = _FIRST_POLL_S
    while True:
        job = await run_in_threadpool(_read_job, runtime, job_id)
        outcome = wait_outcome(
            task=task,
            job_status=job.status,
            steps=_step_views(job),
            max_retries=settings.max_retries,
            job_error=job.error_message,
            diarize=diarize,
        )
        if outcome == "ready":
            return job
        if isinstance(outcome, OpenAIError):
            outcome.job_id = job_id
            raise outcome
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OpenAIError(
                504,
                f"job {job_id} has not finished within {settings.openai_wait_seconds:g} s; it goes on: "
                f"poll GET /jobs/{job_id} and read GET /jobs/{job_id}/results",
                code="timeout",
                error_type="timeout",
                job_id=job_id,
            )
        if await request.is_disconnected():
            # Nobody is waiting any more; the job goes on and its results stay readable.
            log.info("openai client gone", extra={"action": "openai_audio_disconnected", "job_id": str(job_id)})
            raise OpenAIError(499, "the client closed the request", code="client_closed", job_id=job_id)
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * _POLL_GROWTH, _MAX_POLL_S)


def _read_job(runtime: Runtime, job_id: uuid.UUID) -> Job:
    with runtime.sessions() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None:  # deleted under us (retention): as good as cancelled
            raise OpenAIError(409, f"job {job_id} no longer exists", code="job_cancelled", job_id=job_id)
        session.expunge(job)
        return job
