"""A job's options beyond its workflow: what the client asked for on POST /jobs, recorded with the job
(jobs.options), shown in GET /jobs/{id}, and read by the workflow (which steps it has) and the steps
(how they run)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from shared.domain.languages import UnsupportedLanguage, to_iso639_3


def without_nul(value: str) -> str:
    """Refuse a NUL character: PostgreSQL stores no NUL in text (nor `\\u0000` in JSON), and no prompt,
    word or name needs one."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


NoNul = AfterValidator(without_nul)
Hotword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NoNul]


LANGUAGE_CODE = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$"
"""An ISO 639-1 or 639-3 code, with an optional region or script (`en`, `fra`, `zh-Hans`)."""


class ClientOptions(BaseModel):
    """The options a client sets on a job, declared once: POST /jobs takes them as they are
    (functions/api/schemas.py, CreateJobRequest), and the job records them (JobOptions)."""

    speaker_labels: bool = False
    """Label who speaks when: every segment and word gets a `speaker` ("A", "B", …). Audio workflows."""
    speakers_expected: int | None = Field(default=None, ge=1, le=20)
    """How many people speak, if known (implies speaker_labels). Audio workflows."""
    known_speakers: tuple[uuid.UUID, ...] | None = Field(default=None, min_length=1, max_length=20)
    """Enrolled voices (POST /speakers) that may speak: a speaker whose voice matches one is named after
    it instead of "A", "B", … (implies speaker_labels). Audio workflows, channels=mix."""
    channels: Literal["mix", "split"] = "mix"
    """`mix` downmixes; `split` transcribes each channel as its own speaker (a call recorded one party a
    channel) and merges them in time order. Audio workflows; a one-channel upload is refused at start."""
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=2000), NoNul] | None = None
    """Whisper's initial prompt (at most 224 tokens): spellings, names, style. Audio workflows."""
    hotwords: tuple[Hotword, ...] | None = Field(default=None, min_length=1, max_length=100)
    """Words and names to favour in the transcript. Audio workflows."""
    languages: tuple[Annotated[str, StringConstraints(pattern=LANGUAGE_CODE)], ...] | None = Field(
        default=None, min_length=1, max_length=20
    )
    """The languages the audio may be in (ISO 639-1 or 639-3; recorded as ISO 639-3): language
    identification answers one of them. full_pipeline and lid_only, without source_language."""
    code_switching: bool = False
    """The language may change between stretches of speech (at pauses): each stretch is identified and
    transcribed in its own language, every segment says which, and full_pipeline translates the segments
    not already in the target language. `languages` narrows the choice. full_pipeline and transcribe_only,
    without source_language."""
    redact_pii: bool = False
    """Mask card and phone numbers, other identifying numbers, e-mail addresses and names in every result."""
    redact_pii_audio: bool = False
    """Also make the audio with every masked stretch replaced (GET /jobs/{id}/redacted-audio, a WAV of the
    upload's length, rate and channels; the REDACT_AUDIO step); implies redact_pii. full_pipeline and
    transcribe_only."""
    redact_pii_audio_method: Literal["beep", "silence"] = "beep"
    """With redact_pii_audio: a 1 kHz tone (`beep`) or `silence` over each masked stretch."""
    retention_seconds: int | None = Field(default=None, ge=60)
    """Delete this job's audio and results this long after it ends (at most the server's retention)."""
    audio_url: Annotated[str, StringConstraints(min_length=1, max_length=8192), NoNul] | None = None
    """Audio workflows: fetch the audio from this URL instead of an upload (https, a public host; an Azure
    Blob URL with a read SAS works). The job is queued at once; its FETCH step downloads and checks the
    file. audio_filename is then optional (the name is taken from the URL's path). Its query may hold a
    secret (a SAS): logs and answers name the host only."""

    @model_validator(mode="before")
    @classmethod
    def _audio_redaction_masks_the_text(cls, data: Any) -> Any:
        # Redacted audio beeps what the masked transcript masks: asking for it asks for the masking.
        if isinstance(data, Mapping) and data.get("redact_pii_audio") is True:
            return {**data, "redact_pii": True}
        return data

    @model_validator(mode="before")
    @classmethod
    def _known_speakers_label_speakers(cls, data: Any) -> Any:
        # Naming speakers after enrolled voices needs the speakers told apart first.
        if isinstance(data, Mapping) and (data.get("known_speakers") or data.get("speaker_references")):
            return {**data, "speaker_labels": True}
        return data

    @field_validator("known_speakers")
    @classmethod
    def _distinct_speakers(cls, value: tuple[uuid.UUID, ...] | None) -> tuple[uuid.UUID, ...] | None:
        return None if value is None else tuple(dict.fromkeys(value))

    @field_validator("audio_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        # The address policy (https, public hosts) needs the settings: the route and FETCH apply it.
        if value is None:
            return value
        try:
            parts = urlsplit(value)
        except ValueError:
            raise ValueError("audio_url is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("audio_url must be an absolute http(s) URL")
        return value

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return value
        try:
            return tuple(dict.fromkeys(to_iso639_3(code) for code in value))
        except UnsupportedLanguage as error:
            raise ValueError(f"languages: {error.code!r} is not a language code SpeechFlow knows") from None


class SpeakerReference(BaseModel):
    """A voice given with one request rather than enrolled (the OpenAI front's known_speaker_references):
    its name and its clip, a blob under the job's folder of the audio container, deleted with the job's audio."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NoNul]
    blob: str


class JobOptions(ClientOptions):
    """A job's options as recorded (jobs.options): the client's, and what start learned of the upload."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    speaker_references: tuple[SpeakerReference, ...] | None = Field(default=None, min_length=1, max_length=4)
    """Set by the OpenAI front, never by a client of POST /jobs (implies speaker_labels)."""

    channel_count: int | None = None
    """How many channels the upload has (recorded at start, from the probe)."""

    @property
    def split_channels(self) -> bool:
        return self.channels == "split"

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> JobOptions:
        return cls.model_validate(dict(stored or {}))

    def stored(self) -> dict[str, Any]:
        """What to keep in jobs.options: only what differs from the defaults."""
        return self.model_dump(mode="json", exclude_defaults=True)


AUDIO_ONLY_OPTIONS = (
    "speaker_labels",
    "known_speakers",
    "speakers_expected",
    "channels",
    "prompt",
    "hotwords",
    "audio_url",
    "languages",
    "code_switching",
    "redact_pii_audio",
    "redact_pii_audio_method",
)
"""Options that only mean something for a workflow whose input is audio."""
