"""OpenAI's Realtime transcription protocol, as SpeechFlow speaks it: the client's events read into
`SessionConfig` changes and commands, and the server's events built as OpenAI's SDK types describe
them (`openai.types.realtime`). Both schemas are read: the GA one (`session.update` with
`session.type = "transcription"`, `audio.input.format`) and the beta one (`transcription_session.update`,
`input_audio_format`). Anything malformed is a `ProtocolError`, answered with an `error` event in
OpenAI's shape, after which the session goes on.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from shared.domain.languages import to_whisper
from shared.engines.speech.streaming import AudioFormat

MAX_APPEND_BYTES = 15 * 1024 * 1024
"""One append's audio at most, decoded (OpenAI's limit)."""
LOGPROBS = "item.input_audio_transcription.logprobs"


class ProtocolError(Exception):
    """A client event that cannot be applied: answered with an `error` event; the session goes on."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param
        self.event_id: str | None = None
        """The client event's id, when it had one."""


@dataclass(frozen=True)
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SessionConfig:
    schema: Literal["ga", "beta"] = "ga"
    audio_format: AudioFormat = "pcm16"
    rate: int = 24000
    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    logprobs: bool = False

    def describe(self, session_id: str) -> dict[str, Any]:
        """The session as `session.created` / `session.updated` show it."""
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt or ""}
        detection = (
            None
            if self.turn_detection is None
            else {
                "type": "server_vad",
                "threshold": self.turn_detection.threshold,
                "prefix_padding_ms": self.turn_detection.prefix_padding_ms,
                "silence_duration_ms": self.turn_detection.silence_duration_ms,
            }
        )
        include = [LOGPROBS] if self.logprobs else []
        if self.schema == "beta":
            return {
                "id": session_id,
                "object": "realtime.transcription_session",
                "input_audio_format": self.audio_format,
                "input_audio_transcription": transcription,
                "turn_detection": detection,
                "include": include,
            }
        formats: dict[str, dict[str, Any]] = {
            "pcm16": {"type": "audio/pcm", "rate": self.rate},
            "g711_ulaw": {"type": "audio/pcmu"},
            "g711_alaw": {"type": "audio/pcma"},
        }
        audio_format = formats[self.audio_format]
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.transcription_session",
            "audio": {"input": {"format": audio_format, "transcription": transcription, "turn_detection": detection}},
            "include": include,
        }


@dataclass(frozen=True)
class Append:
    audio: bytes


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class Update:
    config: SessionConfig


Command = Append | Commit | Clear | Update


def parse(text: str | bytes, config: SessionConfig) -> tuple[Command, str | None]:
    """A client event as a command, with the client's `event_id` (echoed in errors)."""
    try:
        event = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise ProtocolError(f"the event is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(event, dict):
        raise ProtocolError("an event is a JSON object", code="invalid_event")
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    kind = event.get("type")
    try:
        if kind == "input_audio_buffer.append":
            return Append(_audio(event.get("audio"))), event_id
        if kind == "input_audio_buffer.commit":
            return Commit(), event_id
        if kind == "input_audio_buffer.clear":
            return Clear(), event_id
        if kind == "session.update":
            return Update(_ga_session(event.get("session"), config)), event_id
        if kind == "transcription_session.update":
            return Update(_beta_session(event.get("session"), config)), event_id
    except ProtocolError as refused:
        refused.event_id = event_id
        raise
    unknown = ProtocolError(
        f"unknown or unsupported event type {kind!r} in a transcription session", code="invalid_event", param="type"
    )
    unknown.event_id = event_id
    raise unknown


def _audio(value: object) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("`audio` must be base64-encoded audio bytes", param="audio")
    if len(value) > MAX_APPEND_BYTES * 4 // 3 + 4:
        raise ProtocolError("one append may carry at most 15 MiB of audio", code="audio_too_large", param="audio")
    try:
        audio = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("`audio` is not valid base64", code="invalid_base64", param="audio") from None
    if len(audio) > MAX_APPEND_BYTES:
        raise ProtocolError("one append may carry at most 15 MiB of audio", code="audio_too_large", param="audio")
    return audio


def _mapping(value: object, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"`{param}` must be an object", param=param)
    return value


def _ga_session(value: object, config: SessionConfig) -> SessionConfig:
    session = _mapping(value, "session")
    if session.get("type", "transcription") != "transcription":
        raise ProtocolError(
            "this endpoint serves transcription sessions: session.type must be `transcription`",
            param="session.type",
        )
    config = replace(config, schema="ga")
    audio_input = _mapping(_mapping(session.get("audio"), "session.audio").get("input"), "session.audio.input")
    if "format" in audio_input:
        config = _ga_format(_mapping(audio_input["format"], "session.audio.input.format"), config)
    if "transcription" in audio_input:
        config = _transcription(audio_input["transcription"], config, "session.audio.input.transcription")
    if "turn_detection" in audio_input:
        config = _turn_detection(audio_input["turn_detection"], config, "session.audio.input.turn_detection")
    if "include" in session:
        config = _include(session["include"], config, "session.include")
    return config


def _ga_format(audio_format: dict[str, Any], config: SessionConfig) -> SessionConfig:
    kind = audio_format.get("type")
    if kind == "audio/pcm":
        rate = audio_format.get("rate", 24000)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
            raise ProtocolError(
                "audio/pcm rate must be an integer from 8000 to 48000", param="session.audio.input.format.rate"
            )
        return replace(config, audio_format="pcm16", rate=rate)
    if kind in ("audio/pcmu", "audio/pcma"):
        return replace(config, audio_format="g711_ulaw" if kind == "audio/pcmu" else "g711_alaw", rate=8000)
    raise ProtocolError(
        f"unsupported audio format {kind!r}: audio/pcm, audio/pcmu or audio/pcma",
        param="session.audio.input.format.type",
    )


def _beta_session(value: object, config: SessionConfig) -> SessionConfig:
    session = _mapping(value, "session")
    config = replace(config, schema="beta")
    if "input_audio_format" in session:
        kind = session["input_audio_format"]
        if kind not in ("pcm16", "g711_ulaw", "g711_alaw"):
            raise ProtocolError(
                f"unsupported input_audio_format {kind!r}: pcm16, g711_ulaw or g711_alaw",
                param="session.input_audio_format",
            )
        config = replace(config, audio_format=kind, rate=24000 if kind == "pcm16" else 8000)
    if "input_audio_transcription" in session:
        config = _transcription(session["input_audio_transcription"], config, "session.input_audio_transcription")
    if "turn_detection" in session:
        config = _turn_detection(session["turn_detection"], config, "session.turn_detection")
    if "include" in session:
        config = _include(session["include"], config, "session.include")
    return config


def _transcription(value: object, config: SessionConfig, param: str) -> SessionConfig:

    settings = _mapping(value, param)
    model = settings.get("model", config.model)
    language = settings.get("language", config.language)
    prompt = settings.get("prompt", config.prompt)
    if not isinstance(model, str):
        raise ProtocolError("`model` must be a string", param=f"{param}.model")
    if language is not None:
        if not isinstance(language, str):
            raise ProtocolError("`language` must be an ISO 639-1 or 639-3 code", param=f"{param}.language")
        try:
            to_whisper(language)
        except Exception:
            raise ProtocolError(f"unsupported language {language!r}", param=f"{param}.language") from None
    if prompt is not None and (not isinstance(prompt, str) or "\x00" in prompt or len(prompt) > 2000):
        raise ProtocolError("`prompt` must be text of at most 2,000 characters", param=f"{param}.prompt")
    return replace(config, model=model, language=language or None, prompt=prompt or None)


def _turn_detection(value: object, config: SessionConfig, param: str) -> SessionConfig:
    if value is None:
        return replace(config, turn_detection=None)
    settings = _mapping(value, param)
    if settings.get("type", "server_vad") != "server_vad":
        raise ProtocolError("turn_detection.type must be `server_vad` (or turn_detection null)", param=f"{param}.type")
    current = config.turn_detection or TurnDetection()
    threshold = settings.get("threshold", current.threshold)
    padding = settings.get("prefix_padding_ms", current.prefix_padding_ms)
    silence = settings.get("silence_duration_ms", current.silence_duration_ms)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0.0 < threshold < 1.0:
        raise ProtocolError("threshold must be a number between 0 and 1", param=f"{param}.threshold")
    for name, number, top in (("prefix_padding_ms", padding, 5000), ("silence_duration_ms", silence, 10000)):
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number <= top:
            raise ProtocolError(f"{name} must be an integer from 0 to {top}", param=f"{param}.{name}")
    return replace(config, turn_detection=TurnDetection(float(threshold), padding, silence))


def _include(value: object, config: SessionConfig, param: str) -> SessionConfig:
    if value is None:
        return replace(config, logprobs=False)
    if not isinstance(value, list) or any(item != LOGPROBS for item in value):
        raise ProtocolError(f"include may hold only {LOGPROBS!r}", param=param)
    return replace(config, logprobs=bool(value))


def event_id() -> str:
    return "event_" + secrets.token_hex(10)


def error_event(error: ProtocolError) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": event_id(),
        "error": {
            "type": "invalid_request_error",
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": error.event_id,
        },
    }
