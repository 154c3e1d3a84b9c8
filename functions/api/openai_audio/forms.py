"""The OpenAI audio request: its multipart form read from a stream capped at the file limit, and its
fields checked and turned into what the job records."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser, parse_options_header

from functions.api.openai_audio.errors import OpenAIError
from functions.api.openai_audio.references import MAX_REFERENCES, Reference, parse_references
from shared.domain.languages import UnsupportedLanguage, to_iso639_3, to_whisper
from shared.domain.options import JobOptions, SpeakerReference
from shared.domain.subtitle_cues import CUE_SECONDS, LINE_CHARS, LINES, CueRules
from shared.engines.speech.prompt_tokens import tokens_over_limit
from shared.engines.speech.transcriber import MAX_PROMPT_TOKENS

Task = Literal["transcribe", "translate"]


ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]


RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)


TRANSLATION_FORMATS: tuple[str, ...] = ("json", "text", "srt", "verbose_json", "vtt")
"""OpenAI translates with Whisper only, which labels no speakers."""

STREAM_FORMATS: tuple[str, ...] = ("json", "text", "diarized_json")
"""What OpenAI streams a transcription as: text deltas, and diarized segments."""


Granularity = Literal["word", "segment"]


MAX_FILE_BYTES = 25 * 1024 * 1024
"""OpenAI's own limit on these endpoints, so its clients already respect it. The synchronous wait
suits short audio; longer recordings go through POST /jobs (up to MAX_UPLOAD_BYTES)."""


_MULTIPART_OVERHEAD = 64 * 1024
"""Room for the form's other fields and part headers when the request's Content-Length is checked."""


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
    """How srt and vtt cues are cut (max_line_chars, max_lines, max_cue_seconds; shared/domain/subtitle_cues.py)."""
    references: tuple[Reference, ...] = ()
    """Known speakers' names and clips (known_speaker_names[], known_speaker_references[])."""
    stream: bool = False
    """Answer as OpenAI's transcription stream (server-sent events) instead of one body."""

    @property
    def diarize(self) -> bool:
        """Speakers asked for: the job diarizes and the answer waits for it."""
        return self.response_format == "diarized_json"

    def job_options(self, reference_blobs: tuple[str, ...] = ()) -> dict[str, Any]:
        """What the job records: its vocabulary options, speaker labels (and the blobs of the known
        speakers' references, one per reference), and how it was asked for."""
        given = [
            SpeakerReference(name=reference.name, blob=blob)
            for reference, blob in zip(self.references, reference_blobs, strict=True)
        ]
        try:
            options = JobOptions(
                prompt=self.prompt,
                hotwords=self.hotwords,
                speaker_labels=self.diarize,
                languages=self.languages,
                speaker_references=tuple(given) or None,
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
    references = parse_references(form, response_format)
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
    stream = (_text_field(form, "stream", max_length=10) or "false").lower() == "true"
    if stream and task == "translate":
        raise OpenAIError(400, "translations are not streamed (as with OpenAI); leave stream unset", param="stream")
    if stream and response_format not in STREAM_FORMATS:
        raise OpenAIError(
            400,
            f"stream=true answers as server-sent events: response_format must be one of {', '.join(STREAM_FORMATS)}",
            param="response_format",
        )
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
        references=references,
        stream=stream,
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
        properties["stream"] = {
            "type": "boolean",
            "default": False,
            "description": "json, text or diarized_json as server-sent events (transcript.text.delta, "
            "transcript.text.segment, transcript.text.done), sent once the transcript is ready.",
        }
        properties["keywords[]"] = {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 100},
            "maxItems": 100,
            "description": "Words and names to favour (the job's hotwords).",
        }
        properties["known_speaker_names[]"] = {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 100},
            "maxItems": MAX_REFERENCES,
            "description": "diarized_json: the names of known speakers, one per known_speaker_references entry.",
        }
        properties["known_speaker_references[]"] = {
            "type": "array",
            "items": {"type": "string", "pattern": "^data:"},
            "maxItems": MAX_REFERENCES,
            "description": "diarized_json: a short clip of each named voice as a data URL (data:audio/wav;base64,…).",
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
