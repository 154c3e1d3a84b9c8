"""Known speakers on the OpenAI front, as OpenAI takes them: `known_speaker_names[]` and
`known_speaker_references[]`, up to four of each, one data URL of a short clip per name, with
`response_format=diarized_json`. Each reference is written beside the job's audio (deleted with it) and
the DIARIZE step names a speaker whose voice matches one (shared/steps/diarize.py)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from starlette.datastructures import FormData

from functions.api.openai_audio.errors import OpenAIError

MAX_REFERENCES = 4
"""OpenAI's own limit."""
MAX_REFERENCE_BYTES = 700 * 1024
"""A clip's bytes once decoded; its data URL must also fit the form parser's 1 MiB for a text field."""

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[^;,]*)*;base64,(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Reference:
    name: str
    audio: bytes
    extension: str
    """The file name's extension for the clip's media type (`.wav`), so the decoder's probe has a hint."""


def _repeated(form: FormData, name: str) -> list[str]:
    """A repeated field as the SDKs send it; never split at commas (a data URL has one)."""
    values = []
    for item in [*form.getlist(f"{name}[]"), *form.getlist(name)]:
        if not isinstance(item, str):
            raise OpenAIError(400, f"{name} must be text, not a file", param=name)
        if item.strip():
            values.append(item.strip())
    return values


def parse_references(form: FormData, response_format: str) -> tuple[Reference, ...]:
    """The references of a request, checked; a fault is a 400 naming the field."""
    names = _repeated(form, "known_speaker_names")
    urls = _repeated(form, "known_speaker_references")
    if not names and not urls:
        return ()
    param = "known_speaker_names" if names else "known_speaker_references"
    if response_format != "diarized_json":
        raise OpenAIError(400, f"{param} applies to response_format diarized_json", param=param)
    if len(names) != len(urls):
        raise OpenAIError(
            400,
            f"give one known_speaker_references entry per known_speaker_names entry ({len(names)} names,"
            f" {len(urls)} references)",
            param=param,
        )
    if len(names) > MAX_REFERENCES:
        raise OpenAIError(400, f"{param}: at most {MAX_REFERENCES} known speakers", param=param)
    for name in names:
        if len(name) > 100 or "\x00" in name:
            raise OpenAIError(
                400, "known_speaker_names: at most 100 characters each, no NUL", param="known_speaker_names"
            )
    if len(set(names)) != len(names):
        raise OpenAIError(400, "known_speaker_names: each name once", param="known_speaker_names")
    return tuple(Reference(name, *_clip(url)) for name, url in zip(names, urls, strict=True))


def _clip(url: str) -> tuple[bytes, str]:
    param = "known_speaker_references"
    found = _DATA_URL.match(url)
    if found is None:
        raise OpenAIError(400, f"{param}: each must be a data URL, data:audio/…;base64,…", param=param)
    media = found["type"].lower()
    if not media.startswith("audio/") and media != "application/octet-stream":
        raise OpenAIError(400, f"{param}: {media} is not an audio type", param=param)
    try:
        audio = base64.b64decode(found["data"], validate=True)
    except (binascii.Error, ValueError):
        raise OpenAIError(400, f"{param}: the data URL's base64 cannot be decoded", param=param) from None
    if not audio:
        raise OpenAIError(400, f"{param}: a reference is empty", param=param)
    if len(audio) > MAX_REFERENCE_BYTES:
        raise OpenAIError(400, f"{param}: a reference is over {MAX_REFERENCE_BYTES} bytes", param=param)
    subtype = media.split("/", 1)[1].removeprefix("x-")
    extension = {"mpeg": "mp3", "wave": "wav", "vnd.wave": "wav", "octet-stream": "bin"}.get(subtype, subtype)
    return audio, f".{re.sub(r'[^a-z0-9]', '', extension)[:8] or 'bin'}"
